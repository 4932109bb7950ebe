"""One request and its answer on the edge: head rewritten, bodies streamed, errors as JSON.

The rules are the aiohttp proxy's (`wasp_master.proxy`): hop-by-hop headers
and anything named in `Connection` are dropped both ways, the master's
credentials never reach a worker, `X-Forwarded-For` is set by the master. A
worker that cannot be reached, or stays silent past the read timeout, is a 503
with the reason and `Retry-After`, unless part of its answer was already sent,
in which case the client connection is cut so the client sees a short answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from http import HTTPStatus
from typing import TYPE_CHECKING

from wasp_master.edge.upstream import Header, Target, UpstreamConnection
from wasp_master.errors import MasterError, ShardDown
from wasp_master.proxy import HOP_BY_HOP, PRIVATE

if TYPE_CHECKING:
    from wasp_master.edge.server import EdgeConnection

_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-host"})  # set here, never trusted
TO_SHARD_DROPPED = _HOP | frozenset(h.encode() for h in PRIVATE) | _FORWARDED
# The app checks the API key itself and serves WebSocket upgrades: keep those.
TO_APP_DROPPED = (_HOP - {b"upgrade", b"host"}) | _FORWARDED
FROM_UPSTREAM_DROPPED = _HOP - {b"host"}
FROM_UPGRADE_DROPPED = FROM_UPSTREAM_DROPPED - {b"connection", b"upgrade"}
_RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_NO_BODY_STATUS = frozenset({204, 304})
_LAST_CHUNK = b"0\r\n\r\n"


def _named_in_connection(headers: list[Header]) -> set[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return named - {b"upgrade"}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def error_response(error: MasterError, close: bool) -> bytes:
    """The same `{"ok": false, "error"}` answer the app's middleware gives."""
    body = json.dumps(error.body()).encode()
    head = [
        b"HTTP/1.1 %d %s" % (error.status, HTTPStatus(error.status).phrase.encode()),
        b"Content-Type: application/json; charset=utf-8",
        b"Content-Length: %d" % len(body),
        *(f"{k}: {v}".encode() for k, v in error.headers.items()),
    ]
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Exchange:
    """A request from `client` to `target`, from its head to the last byte of its answer."""

    def __init__(
        self,
        client: EdgeConnection,
        target: Target,
        method: bytes,
        url: bytes,
        headers: list[Header],
        http_11: bool,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.client = client
        self.target = target
        self.method = method
        self.http_11 = http_11
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.started = time.perf_counter()
        self.refusal: MasterError | None = None
        self.body_done = False
        self.upstream: UpstreamConnection | None = None
        self.reused = False
        self.responded = False  # the answer's head went to the client
        self.finished = False
        self.status = 0
        self.interim = False  # a 1xx answer is being passed; the real one follows
        self.head_only = method == b"HEAD"
        self.chunked_out = False
        self.until_close = False  # the worker's answer ends when it closes
        self._out: list[bytes] = []
        self._pending: list[bytes] | None = []  # request bytes until an upstream is attached
        self._connecting: asyncio.Task[None] | None = None

        lowered = [(name.lower(), value) for name, value in headers]
        length = next((v for n, v in lowered if n == b"content-length"), None)
        self.chunked_in = any(n == b"transfer-encoding" and b"chunked" in v for n, v in lowered)
        self.has_body = self.chunked_in or (length is not None and length.strip() != b"0")
        self.head = self._request_head(url, headers, lowered, length)

    def _request_head(
        self, url: bytes, headers: list[Header], lowered: list[Header], length: bytes | None
    ) -> bytes:
        dropped = TO_SHARD_DROPPED if self.target.shard is not None else TO_APP_DROPPED
        named = _named_in_connection(headers)
        lines = [b"%b %b HTTP/1.1" % (self.method, url)]
        host = b""
        for (name, value), (low, _) in zip(headers, lowered, strict=True):
            if low == b"host":
                host = value
            if low in dropped or low in named:
                continue
            lines.append(name + b": " + value)
        if self.target.shard is not None:
            lines.append(b"Host: " + self.target.host_header)
            if host:
                lines.append(b"X-Forwarded-Host: " + host)
        lines.append(b"X-Forwarded-For: " + self.client.peer)
        if self.upgrade:
            lines.append(b"Connection: Upgrade")
        if self.chunked_in:
            lines.append(b"Transfer-Encoding: chunked")
        elif length is not None:
            lines.append(b"Content-Length: " + length.strip())
        return b"\r\n".join(lines) + b"\r\n\r\n"

    # request side, driven by the client connection
    def begin(self) -> None:
        """Start sending: on an idle kept-alive connection if there is one."""
        if self.refusal is not None:
            self._answer_error(self.refusal)
            return
        pool = self.client.edge.pool
        upstream = pool.take_idle(self.target)
        if upstream is not None:
            self._attach(upstream, reused=True)
        else:
            self.client.hold_reading(True)  # a body waits in the client's socket, not here
            self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            upstream = await self.client.edge.pool.connect(self.target)
        except (OSError, TimeoutError) as error:
            self._connecting = None
            self.upstream_failed(f"cannot reach it ({type(error).__name__})")
            return
        self._connecting = None
        if self.finished:  # the client left meanwhile
            upstream.close()
            return
        self._attach(upstream, reused=False)

    def _attach(self, upstream: UpstreamConnection, reused: bool) -> None:
        self.upstream, self.reused = upstream, reused
        self.client.edge.pool.attach(upstream, self)
        pending, self._pending = self._pending, None
        upstream.send(b"".join([self.head, *(pending or ())]))
        if not reused:
            self.client.hold_reading(False)

    def request_body(self, data: bytes) -> None:
        self.request_body_raw(_chunk(data) if self.chunked_in and not self.upgrade else data)

    def request_done(self) -> None:
        self.body_done = True
        if self.chunked_in:
            self.request_body_raw(_LAST_CHUNK)

    def request_body_raw(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending.append(data)
        elif self.upstream is not None:
            self.upstream.send(data)

    # answer side, driven by the upstream connection (upstream.Listener)
    def response_head(
        self, status: int, reason: bytes, headers: list[Header], keep_alive: bool
    ) -> None:
        if 100 <= status < 200 and status != 101:
            self.interim = True  # e.g. 100 Continue: pass it, the final answer follows
            self._out.append(b"HTTP/1.1 %d %b\r\n\r\n" % (status, reason))
            return
        self.status = status
        if not keep_alive and self.upstream is not None:
            self.upstream.usable = False
        dropped = FROM_UPGRADE_DROPPED if status == 101 else FROM_UPSTREAM_DROPPED
        named = _named_in_connection(headers) if status != 101 else set()
        lines = [b"HTTP/1.1 %d %b" % (status, reason)]
        length = None
        chunked = False
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                length = value
            elif low == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            if low in dropped or low in named:
                continue
            lines.append(name + b": " + value)
        if length is not None:
            lines.append(b"Content-Length: " + length)
        elif status == 101 or status in _NO_BODY_STATUS or self.head_only:
            pass
        elif self.http_11:
            self.chunked_out = True
            lines.append(b"Transfer-Encoding: chunked")
        else:
            self.keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        if length is None and not chunked and status != 101 and status not in _NO_BODY_STATUS:
            self.until_close = not self.head_only
            if self.upstream is not None:
                self.upstream.usable = False
        if not self.keep_alive and status != 101:
            lines.append(b"Connection: close")
        elif not self.http_11:
            lines.append(b"Connection: keep-alive")
        self._out.append(b"\r\n".join(lines) + b"\r\n\r\n")
        self.responded = True
        if self.head_only:  # llhttp would wait for the body a HEAD answer never has
            if self.upstream is not None:
                self.upstream.usable = False
            self._finish()

    def response_body(self, data: bytes) -> None:
        if self.finished:
            return
        self._out.append(_chunk(data) if self.chunked_out else data)

    def response_done(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.status == 101:  # llhttp ends the head's message; the tunnel goes on
            return
        if self.chunked_out:
            self._out.append(_LAST_CHUNK)
        self._finish()

    def upstream_upgraded(self, rest: bytes) -> None:
        """101 Switching Protocols: from now on both sides are a byte tunnel."""
        if rest:
            self.response_body(rest)
        self.flush()
        self.client.tunnel_to(self)

    def upstream_failed(self, why: str) -> None:
        if self.finished:
            return
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            self.client.edge.pool.discard(upstream)
        if not self.responded:
            if self.reused and self.method in _RETRYABLE and not self.has_body:
                # A kept-alive connection the worker had just closed: try once on a new one.
                self.reused = False
                self._pending = []
                self._connecting = asyncio.create_task(self._connect())
                return
            self._answer_error(ShardDown(self.target.shard or "master", why))
            return
        self.finished = True
        self._count()
        # A tunnel ends as a close; a cut answer must look cut (nothing more is flushed).
        self.client.abort(graceful=self.status == 101)

    def upstream_closed(self) -> None:
        if self.until_close and self.responded and not self.finished:
            if self.chunked_out:
                self._out.append(_LAST_CHUNK)
            self.upstream = None
            self._finish()
        elif not self.finished:
            self.upstream = None
            self.upstream_failed("it closed the connection")

    def flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            self.client.write(b"".join(out))

    def hold_client(self, held: bool) -> None:
        self.client.hold_reading(held)

    # ends
    def _answer_error(self, error: MasterError) -> None:
        # A body still on its way would be read as the next request: hang up instead.
        close = not self.keep_alive or (self.has_body and not self.body_done)
        self.keep_alive = not close
        self.status = error.status
        self._out.append(error_response(error, close))
        self.responded = True
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            if self.body_done:
                self.client.edge.pool.release(upstream)
            else:  # answered before the whole request was sent: the stream is out of step
                self.keep_alive = False
                self.client.edge.pool.discard(upstream)
        self.flush()
        self._count()
        self.client.exchange_done(self)

    def _count(self) -> None:
        if self.target.shard is not None and self.status:
            self.client.edge.metrics.routed(
                self.target.shard, self.status, time.perf_counter() - self.started
            )

    def client_gone(self) -> None:
        """The client hung up: whatever the worker still sends has nowhere to go."""
        self.finished = True
        if self._connecting is not None:
            self._connecting.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            self.client.edge.pool.discard(upstream)
