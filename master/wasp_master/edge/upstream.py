"""Keep-alive connections from the master to workers (and to its own aiohttp app)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

Header = tuple[bytes, bytes]


@dataclass(frozen=True)
class Target:
    """Where an exchange goes: a shard's worker, or the master's own app."""

    shard: str | None  # None: the master's app (not counted as a routed request)
    host: str = ""
    port: int = 0
    unix: str | None = None  # the app listens on a unix socket

    @classmethod
    def of_url(cls, shard: str, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"cannot forward to {url!r}: only http://host:port")
        return cls(shard, parts.hostname, parts.port or 80)

    @property
    def host_header(self) -> bytes:
        return f"{self.host}:{self.port}".encode() if self.unix is None else b"localhost"


class Listener(Protocol):
    """What an upstream connection reports to: the exchange it currently serves."""

    def response_head(
        self, status: int, reason: bytes, headers: list[Header], keep_alive: bool
    ) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_done(self) -> None: ...
    def upstream_upgraded(self, rest: bytes) -> None: ...
    def upstream_failed(self, why: str) -> None: ...
    def upstream_closed(self) -> None: ...
    def flush(self) -> None: ...
    def hold_client(self, held: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to a worker: requests out, answers parsed as they arrive."""

    def __init__(self, pool: UpstreamPool, target: Target) -> None:
        self.pool = pool
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.listener: Listener | None = None
        self.usable = True
        self.tunnel = False  # after a 101: bytes pass as they are
        self.last_seen = 0.0  # loop time of the last byte (read timeout) or of release (idle)
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[Header] = []
        self._reason = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        if listener is None:  # a worker speaking out of turn: not reusable
            self.close()
            return
        self.last_seen = self.pool.loop.time()
        if self.tunnel:
            listener.response_body(data)
            listener.flush()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.tunnel = True
            listener.upstream_upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserError as error:
            self.usable = False
            listener.upstream_failed(f"bad answer ({error})")
            self.close()
            return
        listener.flush()

    def eof_received(self) -> bool | None:
        self.usable = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self.pool.forget(self)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.upstream_closed()

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.hold_client(True)

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.hold_client(False)

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers, self._headers = self._headers, []
        assert self.listener is not None
        self.listener.response_head(
            self._parser.get_status_code(),
            self._reason,
            headers,
            self._parser.should_keep_alive(),
        )

    def on_body(self, body: bytes) -> None:
        if self.listener is not None:
            self.listener.response_body(body)

    def on_message_complete(self) -> None:
        if self.listener is not None:
            self.listener.response_done()

    # used by the exchange
    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause(self, paused: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Idle connections per target, reused newest first; stale ones are closed.

    A connection is busy from `attach` until `release` (reusable again) or
    `close`. A busy one silent for longer than the read timeout fails its
    exchange; a sweep once a fraction of that timeout checks.
    """

    def __init__(
        self, connect_timeout_s: float, read_timeout_s: float, idle_timeout_s: float = 20.0
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s  # below aiohttp's 75 s, so workers never close first
        self._idle: dict[Target, list[UpstreamConnection]] = {}
        self._busy: set[UpstreamConnection] = set()
        self._sweeper = asyncio.create_task(self._sweep())

    def take_idle(self, target: Target) -> UpstreamConnection | None:
        idle = self._idle.get(target)
        now = self.loop.time()
        while idle:
            connection = idle.pop()
            if connection.usable and now - connection.last_seen < self.idle_timeout_s:
                return connection
            connection.close()
        return None

    async def connect(self, target: Target) -> UpstreamConnection:
        """A new connection; OSError or TimeoutError when the worker cannot be reached."""
        async with asyncio.timeout(self.connect_timeout_s):
            if target.unix is not None:
                _, protocol = await self.loop.create_unix_connection(
                    lambda: UpstreamConnection(self, target), target.unix
                )
            else:
                _, protocol = await self.loop.create_connection(
                    lambda: UpstreamConnection(self, target), target.host, target.port
                )
        return protocol

    def attach(self, connection: UpstreamConnection, listener: Listener) -> None:
        connection.listener = listener
        connection.last_seen = self.loop.time()
        self._busy.add(connection)

    def release(self, connection: UpstreamConnection) -> None:
        """Back to the idle list after a complete exchange; closed if it cannot be reused."""
        connection.listener = None
        self._busy.discard(connection)
        if not connection.usable:
            connection.close()
            return
        connection.last_seen = self.loop.time()
        self._idle.setdefault(connection.target, []).append(connection)

    def discard(self, connection: UpstreamConnection) -> None:
        connection.listener = None
        self._busy.discard(connection)
        connection.close()

    def forget(self, connection: UpstreamConnection) -> None:
        self._busy.discard(connection)
        idle = self._idle.get(connection.target)
        if idle and connection in idle:
            idle.remove(connection)

    async def _sweep(self) -> None:
        interval = min(1.0, self.read_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for connection in list(self._busy):
                listener = connection.listener
                silent = now - connection.last_seen
                if listener is not None and not connection.tunnel and silent > self.read_timeout_s:
                    self.discard(connection)
                    listener.upstream_failed(f"no answer within {self.read_timeout_s:g} s")
            for target, idle in list(self._idle.items()):
                for connection in [c for c in idle if now - c.last_seen >= self.idle_timeout_s]:
                    idle.remove(connection)
                    connection.close()
                if not idle:
                    del self._idle[target]

    async def close(self) -> None:
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        for connection in list(self._busy):
            connection.close()
        self._idle.clear()
