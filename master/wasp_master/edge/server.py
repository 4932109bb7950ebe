"""The edge's listening side: one `EdgeConnection` per client connection.

A connection is decided at its first request line: a slot request for an awake
shard keeps it here, anything else hands it to the aiohttp app. Requests on a
kept connection are served one at a time, in order (pipelined ones wait, with
reading paused), each as an `Exchange`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools
from aiohttp import web

from wasp.slots import Slot, SlotError
from wasp_master import auth
from wasp_master.edge.exchange import Exchange, error_response
from wasp_master.edge.upstream import Header, Target, UpstreamPool
from wasp_master.errors import BadRequest, HeadTooLarge, MasterError

if TYPE_CHECKING:
    from wasp_master.app import Master

# What is forwarded straight: a worker's slot operation, in a plain path (no dot
# segments, no escapes: anything that needs normalising goes to the app, which
# routes on the normalised path).
_SLOT_URL = re.compile(
    rb"/api/accounts/([A-Z]{1,8}[1-9][0-9]{0,8})/[A-Za-z][\w-]{0,63}"
    rb"(?:/(?!\.{1,2}(?:\?|$))[\w.@-]{1,255})?(?:\?|$)"
)
_FORWARDED_METHODS = frozenset({b"GET", b"POST", b"PUT", b"PATCH", b"DELETE"})
_FIRST_LINE_LIMIT = 8192
# llhttp sets no bound on a request's head; a client must not grow our memory with one.
MAX_HEAD_BYTES = 64 * 1024
_CACHED_TARGETS = 10_000
KEEPALIVE_TIMEOUT_S = 75.0  # as aiohttp's server


class EdgeConnection(asyncio.Protocol):
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.peer = b""
        self.idle_since = edge.loop.time()
        self.current: Exchange | None = None
        self._peek: bytearray | None = bytearray()  # the first request line, until decided
        self._parser: httptools.HttpRequestParser | None = None
        self._url = b""
        self._headers: list[Header] = []
        self._receiving: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._tunnel: Exchange | None = None
        self._held_by_upstream = False
        self._held_by_queue = False
        self._eof = False
        self._head_bytes = 0  # of the head being read
        self._in_head = True
        self._refused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if isinstance(peer, tuple) else b""
        self.edge.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.request_body_raw(data)
            return
        if self._refused:
            return
        if self._parser is None:
            first = self._decide(data)
            if first is None:
                return
            data = first
        assert self._parser is not None
        started_in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # What follows the head belongs to the new protocol: pass it as it is.
            self._tunnel = self._receiving
            rest = data[upgrade.args[0] :]
            if rest and self._tunnel is not None:
                self._tunnel.request_body_raw(rest)
        except httptools.HttpParserError as error:
            self._bad_request(str(error))
            return
        if started_in_head and self._in_head:  # all of it was head (llhttp keeps no limit)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes"))

    def eof_received(self) -> bool:
        self._eof = True
        return self.current is not None  # half-closed: still answer what was asked

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.connections.discard(self)
        pending = [self.current, self._receiving, *self._queue]
        self.current = self._receiving = None
        self._queue.clear()
        for exchange in pending:
            if exchange is not None and not exchange.finished:
                exchange.client_gone()
        self.transport = None

    def pause_writing(self) -> None:
        self._pause_upstream(True)

    def resume_writing(self) -> None:
        self._pause_upstream(False)

    def _pause_upstream(self, paused: bool) -> None:
        exchange = self._tunnel or self.current
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause(paused)

    # the first request line decides who serves the connection
    def _decide(self, data: bytes) -> bytes | None:
        assert self._peek is not None
        self._peek += data
        end = self._peek.find(b"\r\n")
        if end < 0:
            if len(self._peek) > _FIRST_LINE_LIMIT:
                self._hand_off()
            return None
        method, _, rest = bytes(self._peek[:end]).partition(b" ")
        if self.edge.shard_target(method, rest.rpartition(b" ")[0]) is None:
            self._hand_off()
            return None
        first, self._peek = bytes(self._peek), None
        self._parser = httptools.HttpRequestParser(self)
        return first

    def _hand_off(self) -> None:
        """The aiohttp app takes the connection over, from its first byte."""
        assert self._peek is not None
        assert self.transport is not None
        transport, received = self.transport, bytes(self._peek)
        self.edge.connections.discard(self)
        self.transport = self._peek = None
        protocol = self.edge.app_server()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(received)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        assert parser is not None
        method = parser.get_method()
        upgrade = parser.should_upgrade()
        target = None if upgrade else self.edge.shard_target(method, self._url)
        exchange = Exchange(
            self,
            target or self.edge.app_target,
            method,
            self._url,
            self._headers,
            http_11=parser.get_http_version() == "1.1",
            keep_alive=parser.should_keep_alive() and not upgrade,
            upgrade=upgrade,
        )
        if target is not None:
            exchange.refusal = self.edge.refusal(self._headers)
        self._receiving = exchange
        if self.current is None:
            self.current = exchange
            self.idle_since = 0.0
            exchange.begin()
        else:  # pipelined: it waits its turn, and nothing more is read meanwhile
            self._queue.append(exchange)
            self._held_by_queue = True
            self._apply_hold()

    def on_body(self, body: bytes) -> None:
        if self._receiving is not None:
            self._receiving.request_body(body)

    def on_message_complete(self) -> None:
        if self._receiving is not None:
            self._receiving.request_done()

    # used by exchanges
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def hold_reading(self, held: bool) -> None:
        self._held_by_upstream = held
        self._apply_hold()

    def _apply_hold(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._held_by_upstream or self._held_by_queue:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def tunnel_to(self, exchange: Exchange) -> None:
        self._tunnel = exchange

    def abort(self, graceful: bool = False) -> None:
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()

    def exchange_done(self, exchange: Exchange) -> None:
        if exchange is not self.current:
            return
        self.current = None
        self._held_by_upstream = False
        if self.transport is None:
            return
        if not exchange.keep_alive or (self._eof and not self._queue):
            self.transport.close()
            return
        if self._queue:
            self.current = self._queue.popleft()
            self._held_by_queue = bool(self._queue)
            self._apply_hold()
            self.current.begin()
            return
        self._held_by_queue = False
        self._apply_hold()
        self.idle_since = self.edge.loop.time()

    def _bad_request(self, why: str) -> None:
        self._refuse(BadRequest(f"malformed HTTP request: {why}"))

    def _refuse(self, error: MasterError) -> None:
        """Answer and hang up: the rest of the stream cannot be trusted."""
        if self.transport is None:
            return
        if self.current is None:
            self.transport.write(error_response(error, close=True))
            self.transport.close()
        else:
            self.transport.abort()
        self._refused = True


class Edge:
    """The front door of one master process; see the package docstring."""

    def __init__(self, master: Master, app_server: web.Server, app_socket: str) -> None:
        self.master = master
        self.metrics = master.metrics
        self.loop = asyncio.get_running_loop()
        self.pool = UpstreamPool(master.config.connect_timeout_s, master.config.read_timeout_s)
        self.app_server = app_server
        self.app_target = Target(None, unix=app_socket)
        self.connections: set[EdgeConnection] = set()
        self._targets: dict[bytes, Target] = {}
        self._server: asyncio.Server | None = None
        self._idle_sweeper: asyncio.Task[None] | None = None
        master.directory.listeners.append(self._targets.clear)

    def shard_target(self, method: bytes, url: bytes) -> Target | None:
        """The worker to forward to directly, or None when the app must handle the request."""
        if method not in _FORWARDED_METHODS:
            return None
        found = _SLOT_URL.match(url)
        if found is None:
            return None
        slot = found.group(1)
        target = self._targets.get(slot)
        if target is not None:
            return target
        try:
            route = self.master.directory.table.lookup(Slot.parse(slot.decode()))
        except SlotError:
            return None
        # Asleep or waking: the app wakes it first (only routes that can serve are cached).
        if route is None or route.suspended or self.master.waker.is_waking(route.id):
            return None
        try:
            target = Target.of_url(route.id, route.url)
        except ValueError:
            return None
        if len(self._targets) >= _CACHED_TARGETS:
            self._targets.clear()
        self._targets[slot] = target
        return target

    def refusal(self, headers: list[Header]) -> MasterError | None:
        """The API-key check of the app's `guard`, on raw headers."""
        keys = self.master.config.api_keys
        if not keys:
            return None
        presented = {
            low: value.decode("latin-1")
            for name, value in headers
            if (low := name.lower().decode("latin-1")) in ("x-api-key", "authorization")
        }
        try:
            auth.check_api_key(auth.presented_key(presented), keys)
        except MasterError as error:
            return error
        return None

    async def start(self, host: str, port: int) -> int:
        """Listen; the port actually bound (for port 0)."""
        self._server = await self.loop.create_server(
            lambda: EdgeConnection(self), host, port, reuse_address=True
        )
        self._idle_sweeper = asyncio.create_task(self._close_idle())
        return int(self._server.sockets[0].getsockname()[1])

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(5)
            now = self.loop.time()
            for connection in list(self.connections):
                idle = connection.idle_since
                if idle and now - idle > KEEPALIVE_TIMEOUT_S and connection.transport:
                    connection.transport.close()

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop listening, let answers in flight finish (up to `grace_s`), then close all."""
        self.master.directory.listeners.remove(self._targets.clear)
        if self._server is not None:
            self._server.close()
        if self._idle_sweeper is not None:
            self._idle_sweeper.cancel()
        deadline = self.loop.time() + grace_s
        while self.loop.time() < deadline:
            for connection in list(self.connections):
                if connection.current is None and connection.transport is not None:
                    connection.transport.close()
            if not any(c.current is not None for c in self.connections):
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        await self.pool.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
