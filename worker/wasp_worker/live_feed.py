"""The worker's live events (wa:status, wa:qr, wa:message, ...), numbered and kept.

Every event gets an id `<epoch>.<seq>`: the epoch is fixed when the worker
starts, the sequence counts up. The recent ones stay in a ring buffer that
masters read with `GET /events?after=<id>` (long-poll), so every master replica
sees every event and a master that restarts resumes where it stopped. Workers
also push each event to `MASTER_INTERNAL_URL/internal/emit` when it is set (the
push path); masters drop what they already have by id.

A worker never fails or waits on a request because the master is down: each
push runs in the background, and a failure is a `master_emit_failed` event.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from wasp.waiting import wait_set
from wasp.worker_api import CURSOR_PATTERN
from wasp_worker.events import EventLog

TIMEOUT = aiohttp.ClientTimeout(total=3)
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True)
class Cursor:
    """Where a reader stopped: `<epoch>.<seq>`; another epoch means the worker restarted."""

    epoch: str
    seq: int

    @classmethod
    def parse(cls, text: str) -> Cursor:
        if not _CURSOR.fullmatch(text):
            raise ValueError(f"invalid event id {text[:40]!r}: expected <epoch>.<seq>")
        epoch, _, seq = text.partition(".")
        return cls(epoch, int(seq))


@dataclass(frozen=True)
class Batch:
    events: list[dict[str, Any]]
    gap: bool  # events between the cursor and the first one returned were dropped


class LiveFeed:
    def __init__(self, shard: str, url: str, token: str, log: EventLog, size: int = 5000) -> None:
        self.shard = shard
        self.epoch = format(time.time_ns() // 1_000_000, "x")
        self._seq = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=size)
        self._arrived = asyncio.Event()
        self._url = url.rstrip("/") + "/internal/emit" if url else ""
        self._token = token
        self._log = log
        self._http: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # Called with (event, payload) for every event, before it is pushed (the webhooks'
        # outbox listens here); a listener's failure is logged, never the emitter's.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    async def open(self) -> None:
        if self._url:
            self._http = aiohttp.ClientSession(timeout=TIMEOUT)

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Number and keep the event, wake readers, push it in the background; returns at once."""
        self._seq += 1
        record = {
            "id": f"{self.epoch}.{self._seq}",
            "shard": self.shard,
            "event": event,
            "payload": payload,
            "ts": round(time.time(), 3),
        }
        self._recent.append(record)
        for listener in self.listeners:
            try:
                listener(event, payload)
            except Exception as error:
                self._log.emit("live_listener_failed", event_name=event, error=type(error).__name__)
        self._arrived.set()
        self._arrived = asyncio.Event()
        if self._http is None:
            return
        task = asyncio.create_task(self._send(record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def since(self, cursor: Cursor | None, limit: int = 1000) -> Batch:
        """Events after the cursor (all kept ones for no cursor or another epoch)."""
        kept = list(self._recent)
        first_seq = self._seq - len(kept) + 1
        if cursor is None or cursor.epoch != self.epoch:
            return Batch(kept[:limit], gap=cursor is not None and first_seq > 1)
        start = max(0, cursor.seq + 1 - first_seq)
        return Batch(kept[start : start + limit], gap=cursor.seq + 1 < first_seq)

    async def wait(self, cursor: Cursor | None, timeout_s: float, limit: int = 1000) -> Batch:
        """Like `since`, but waits up to `timeout_s` for the first new event."""
        batch = self.since(cursor, limit)
        if batch.events or timeout_s <= 0:
            return batch
        if not await wait_set(self._arrived, timeout_s):
            return batch
        return self.since(cursor, limit)

    def release_waiters(self) -> None:
        """Answer every pending long-poll now, with what it has (the worker is stopping)."""
        self._arrived.set()

    async def _send(self, record: dict[str, Any]) -> None:
        assert self._http is not None
        headers = {"x-master-token": self._token} if self._token else {}
        body = {key: record[key] for key in ("id", "shard", "event", "payload")}
        try:
            async with self._http.post(self._url, json=body, headers=headers) as response:
                if response.status >= 400:
                    self._log.emit(
                        "master_emit_failed", event_name=record["event"], status=response.status
                    )
        except (aiohttp.ClientError, TimeoutError) as error:
            self._log.emit(
                "master_emit_failed", event_name=record["event"], error=type(error).__name__
            )

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=3)
        if self._http is not None:
            await self._http.close()
