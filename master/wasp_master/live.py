"""Live events from workers to Socket.IO clients, on every master replica.

Each master replica long-polls every worker's `GET /events` (so all replicas
see all events, whichever one a client is connected to) and also accepts a
worker's push, `POST /internal/emit`. Events carry the worker's id
`<epoch>.<seq>`; an id seen once is never delivered twice, whichever path
brought it. Each event goes to the Socket.IO room of its account's workspace
(`ws`, from accounts.json; `default` otherwise) and to the room `all`.

Fan-out: one event goes to every socket in its rooms, 1,000 or more. The
Socket.IO server (`socketio_server`) encodes it once and hands it to each
socket in one pass, without a task per recipient (`FanoutManager`); a socket
whose writer is idle gets the frame written at once, others on their queue
(`LeanSocket`); frames go out uncompressed (`PlainWebSocket`); the garbage
collector runs rarely (`settle_gc`). The wire protocol is unchanged.

Resuming: clients receive `shard` and `eventId` in every payload and send the
last ones back in `join` (`since: {shard: eventId}`); the master replays what
came after from the events it keeps. A master that restarts fills its buffer
from the workers' kept events first, so a client that reconnects to it loses
nothing (within the workers' and master's buffers, 5,000 events per shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import engineio.async_socket
import engineio.exceptions
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from wasp_master.metrics import MasterMetrics
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory

log = logging.getLogger("wasp.master")
KEPT = 5000
POLL_WAIT_S = 20
ALL = "all"


class FanoutManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager with a leaner emit to rooms.

    The stock emit encodes the packet once but then starts one asyncio task per
    recipient and waits for them all; each task only puts the packet on that
    socket's engine.io queue, which never waits (the queue is unbounded). Here
    the same calls run one after another in the emitting task: same packet, same
    queues, same order, without a thousand tasks per event."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:  # one packet per recipient (ack ids): the stock path
            await super().emit(
                event, data, namespace, room, skip_sid, callback=callback, to=to, **kwargs
            )
            return
        room = to or room
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            args = list(data)
        elif data is not None:
            args = [data]
        else:
            args = []
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        packets = [
            eio_packet.Packet(eio_packet.MESSAGE, part)
            for part in (encoded if isinstance(encoded, list) else [encoded])
        ]
        sockets = self.server.eio.sockets
        for sid, eio_sid in self.get_participants(namespace, room):
            socket = sockets.get(eio_sid)
            # A closed socket is skipped, as engine.io's send does; its service task
            # removes it.
            if sid not in skip and socket is not None and not socket.closed:
                for one in packets:
                    await socket.send(one)


class LeanSocket(engineio.async_socket.AsyncSocket):  # type: ignore[misc]
    """engine.io's socket on a websocket, with cheaper sends.

    Each websocket has a writer task that waits on the socket's queue for the next
    packets. The stock wait is `asyncio.wait_for(queue.get(), ping_interval +
    ping_timeout)`, which on Python 3.11 wraps every wait in a new task and a
    timer: per packet, per socket. On a websocket that timeout is redundant: the
    reader of the same socket waits as long for each client frame (a pong at
    least every ping interval) and then ends the writer with `None`. So here the
    writer waits on the queue alone.

    And when the writer is idle (waiting on an empty queue, so every earlier
    packet is written) and the transport's buffer is empty, a message is written
    by the sender itself, the same frame the writer would write, instead of
    waking the writer for it: no queue, no task switch per socket. Otherwise it
    goes on the queue as before. Either way the frames leave in order."""

    ws: PlainWebSocket | None = None  # the websocket this socket's writer sends on
    parked = False  # the writer waits on an empty queue: nothing of ours is in flight

    async def poll(self) -> list[Any]:
        if not self.upgraded:  # long-polling: the HTTP request needs the timeout
            packets: list[Any] = await super().poll()
            return packets
        queue: asyncio.Queue[Any] = self.queue
        if queue.qsize():
            first = queue.get_nowait()
        else:
            self.parked = True
            try:
                first = await queue.get()
            except asyncio.CancelledError:
                raise engineio.exceptions.QueueEmpty() from None
            finally:
                self.parked = False
        queue.task_done()
        if first is None:
            return []
        packets = [first]
        while queue.qsize():
            more = queue.get_nowait()
            queue.task_done()
            if more is None:
                queue.put_nowait(None)  # the end, seen again by the next poll
                break
            packets.append(more)
        return packets

    async def send(self, pkt: Any) -> None:
        if not await self.check_ping_timeout():
            return
        ws = self.ws
        if (
            self.parked
            and not self.queue.qsize()
            and ws is not None
            and pkt.packet_type == eio_packet.MESSAGE
            and ws.drained()
        ):
            # The writer has sent everything and waits: write the frame here, as it
            # would, without waking it. The transport's buffer is empty, so the
            # write goes straight to the kernel and never waits for a drain.
            try:
                await ws.send(pkt.encode())
                return
            except Exception:
                pass  # queued instead: the writer meets the same error and ends the socket
        self.queue.put_nowait(pkt)


class PlainWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """engine.io's aiohttp websocket without permessage-deflate, on a LeanSocket.

    With the extension (browsers and socket.io-client offer it; aiohttp accepts
    it by default and has no size threshold) every frame is deflated once per
    socket, each with its own compressor: a room of 1,000 pays 1,000 compressions
    of the same small event. Events are small JSON; plain frames are cheaper."""

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        # The engine.io socket this websocket serves; its writer and sends from
        # here on use LeanSocket's methods (same state, no new fields).
        socket = self.handler.__self__
        request = environ["aiohttp.request"]
        self.transport = request.transport
        if type(socket) is engineio.async_socket.AsyncSocket:
            socket.__class__ = LeanSocket
            socket.ws = self
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock

    def drained(self) -> bool:
        """Nothing waits in the transport's buffer (and it is open)."""
        transport = self.transport
        return (
            transport is not None
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
        )

    async def send(self, message: str | bytes) -> None:
        # The stock send asks `inspect` whether aiohttp's send is a coroutine, per frame.
        if isinstance(message, bytes):
            await self._sock.send_bytes(message)
        else:
            await self._sock.send_str(message)


# Young collections after this many new container objects (CPython's default is
# 700), and an old one after 20 young and then 10 middle ones.
GC_THRESHOLDS = (50_000, 20, 10)


def settle_gc() -> None:
    """Fewer, cheaper cyclic garbage collections in a master that fans events out.

    One event to 1,000 sockets makes thousands of short-lived objects (futures,
    handles, coroutines). With CPython's default thresholds that meant, measured
    under the events benchmark, about one young collection per event (1.5 to
    8 ms each) and, during a burst, full collections of 90 to 100 ms over every
    socket's objects: pauses every client waits for. Reference counting still
    frees those objects at once; the collector, which only finds cycles, now
    runs rarely, and the objects the master built before serving (gc.freeze)
    are no longer walked by it."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def socketio_server() -> socketio.AsyncServer:
    """The master's Socket.IO server, tuned for fanning events out to many sockets."""
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
        client_manager=FanoutManager(),
    )
    # engine.io takes its websocket class from the driver's module-level table;
    # a copy keeps the change to this server.
    sio.eio._async = {**sio.eio._async, "websocket": PlainWebSocket}
    return sio


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
