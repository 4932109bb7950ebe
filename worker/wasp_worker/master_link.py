"""Pushes live events (wa:status, wa:qr) to the master's POST /internal/emit.

A worker never fails or waits on a request because the master is down: each
push runs in the background, and a failure is a `master_emit_failed` event.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from wasp_worker.events import EventLog

TIMEOUT = aiohttp.ClientTimeout(total=3)


class MasterLink:
    def __init__(self, url: str, token: str, log: EventLog) -> None:
        self._url = url.rstrip("/") + "/internal/emit" if url else ""
        self._token = token
        self._log = log
        self._http: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        if self._url:
            self._http = aiohttp.ClientSession(timeout=TIMEOUT)

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Send in the background; returns at once."""
        if self._http is None:
            return
        task = asyncio.create_task(self._send(event, payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, event: str, payload: dict[str, Any]) -> None:
        assert self._http is not None
        headers = {"x-master-token": self._token} if self._token else {}
        try:
            async with self._http.post(
                self._url, json={"event": event, "payload": payload}, headers=headers
            ) as response:
                if response.status >= 400:
                    self._log.emit("master_emit_failed", event_name=event, status=response.status)
        except (aiohttp.ClientError, TimeoutError) as error:
            self._log.emit("master_emit_failed", event_name=event, error=type(error).__name__)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=3)
        if self._http is not None:
            await self._http.close()
