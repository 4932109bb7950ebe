"""Live events from workers to Socket.IO clients, on every master replica.

Each master replica long-polls every worker's `GET /events` (so all replicas
see all events, whichever one a client is connected to) and also accepts the
seeds' push, `POST /internal/emit`. Events carry the worker's id
`<epoch>.<seq>`; an id seen once is never delivered twice, whichever path
brought it. Each event goes to the Socket.IO room of its account's workspace
(`ws`, from accounts.json; `default` otherwise) and to the room `all`.

Resuming: clients receive `shard` and `eventId` in every payload and send the
last ones back in `join` (`since: {shard: eventId}`); the master replays what
came after from the events it keeps. A master that restarts fills its buffer
from the workers' kept events first, so a client that reconnects to it loses
nothing (within the workers' and master's buffers, 5,000 events per shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

from wasp_master.metrics import MasterMetrics
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory

log = logging.getLogger("wasp.master")
KEPT = 5000
POLL_WAIT_S = 20
ALL = "all"


@dataclass
class ShardEvents:
    """What one shard said: kept events, in arrival order, and the ids already seen."""

    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEPT))
    seen: set[str] = field(default_factory=set)
    order: deque[str] = field(default_factory=lambda: deque(maxlen=KEPT * 2))
    cursor: str | None = None  # the poller's position in the worker's feed
    primed: asyncio.Event = field(default_factory=asyncio.Event)  # first poll done

    def add(self, event: dict[str, Any]) -> bool:
        """Keep the event; False if its id was seen already."""
        event_id = event["id"]
        if event_id in self.seen:
            return False
        if len(self.order) == self.order.maxlen:
            self.seen.discard(self.order[0])
        self.order.append(event_id)
        self.seen.add(event_id)
        self.events.append(event)
        return True

    def after(self, event_id: str | None) -> list[dict[str, Any]]:
        kept = list(self.events)
        if event_id is None:
            return kept
        for at, event in enumerate(kept):
            if event["id"] == event_id:
                return kept[at + 1 :]
        return kept  # unknown id (too old, or another worker run): everything kept


class EventHub:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        directory: ShardDirectory,
        metrics: MasterMetrics,
        workspace_of: Callable[[str], str],
    ) -> None:
        self.sio = sio
        self.directory = directory
        self.metrics = metrics
        self.workspace_of = workspace_of
        self.shards: dict[str, ShardEvents] = {}
        self._pollers: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self.http: aiohttp.ClientSession | None = None
        self.running: dict[str, bool] = {}

    async def deliver(self, shard: str, event: dict[str, Any], live: bool = True) -> bool:
        """Keep an event from a worker and, if new and live, send it to its rooms."""
        kept = self.shards.setdefault(shard, ShardEvents())
        if not kept.add(event):
            return False
        self.metrics.events_received.labels(event["event"]).inc()
        if live:
            payload = self.client_payload(shard, event)
            slot = payload.get("slot")
            rooms = [ALL]
            if isinstance(slot, str):
                rooms.append(f"ws:{self.workspace_of(slot)}")
            await self.sio.emit(event["event"], payload, to=rooms)
            self.metrics.events_emitted.labels(event["event"]).inc()
        return True

    @staticmethod
    def client_payload(shard: str, event: dict[str, Any]) -> dict[str, Any]:
        payload = dict(event.get("payload") or {})
        payload["shard"] = shard
        payload["eventId"] = event["id"]
        return payload

    async def replay(
        self, since: dict[str, str], rooms: set[str], prime_timeout_s: float = 3.0
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events after the client's cursors, for the rooms it is in, in each shard's order.

        A master that just started first takes in what the workers kept (briefly
        waited for), so a client reconnecting to it right away still gets its events."""
        waits = [
            self.shards.setdefault(shard, ShardEvents()).primed.wait()
            for shard in since
            if self.directory.table.get(shard) is not None
        ]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), prime_timeout_s)
        out: list[tuple[str, dict[str, Any]]] = []
        for shard, event_id in since.items():
            kept = self.shards.get(shard)
            if kept is None:
                continue
            for event in kept.after(event_id):
                payload = self.client_payload(shard, event)
                slot = payload.get("slot")
                if ALL in rooms or (
                    isinstance(slot, str) and f"ws:{self.workspace_of(slot)}" in rooms
                ):
                    out.append((event["event"], payload))
        return out

    def sync(self) -> None:
        """One poller per shard in the table, following URL changes."""
        wanted = {route.id: route for route in self.directory.table.routes}
        for shard, (url, task) in list(self._pollers.items()):
            route = wanted.get(shard)
            if route is None or route.url != url:
                task.cancel()
                del self._pollers[shard]
        for shard, route in wanted.items():
            if shard not in self._pollers:
                task = asyncio.create_task(self._poll(route), name=f"events-{shard}")
                self._pollers[shard] = (route.url, task)

    async def _poll(self, route: ShardRoute) -> None:
        assert self.http is not None
        kept = self.shards.setdefault(route.id, ShardEvents())
        # A fresh master takes what the worker kept without re-sending it: clients that
        # were connected before can ask for it with `since`.
        live = kept.cursor is not None
        delay = 0.5
        timeout = aiohttp.ClientTimeout(total=POLL_WAIT_S + 10, sock_connect=2)
        while True:
            params = {"wait": str(POLL_WAIT_S if live else 0)}
            if kept.cursor is not None:
                params["after"] = kept.cursor
            try:
                async with self.http.get(
                    route.url + "/events", params=params, timeout=timeout
                ) as response:
                    response.raise_for_status()
                    batch = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                if self.running.get(route.id, True):
                    log.warning(
                        json.dumps(
                            {
                                "event": "worker_events_unreachable",
                                "shard": route.id,
                                "error": type(error).__name__,
                            }
                        )
                    )
                self.running[route.id] = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.running[route.id] = True
            delay = 0.5
            for event in batch.get("events", []):
                await self.deliver(route.id, event, live=live)
                kept.cursor = event["id"]
            if not batch.get("events") and kept.cursor is None:
                kept.cursor = f"{batch.get('epoch', '0')}.0"
            kept.primed.set()
            live = True

    async def close(self) -> None:
        for _, task in self._pollers.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pollers.clear()
