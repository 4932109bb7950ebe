"""Forwarding one request to a worker, unchanged, and its answer back, unchanged.

Method, path, query, end-to-end headers and body pass through; hop-by-hop
headers do not. Large bodies stream both ways instead of being held in memory.
A worker that cannot be reached, or stays silent past the read timeout, is a
503 with the reason, never a hang. Every forwarded request carries the master's
worker token (a client's own is dropped): workers answer only the master.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from wasp import jsonio
from wasp.contract import WORKER_TOKEN_HEADER
from wasp_master.errors import ShardDown, ShardSlow
from wasp_master.routing import ShardRoute

# RFC 9110 section 7.6.1, plus what this proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Credentials meant for the master, not for workers; the worker token is the master's to set.
PRIVATE = frozenset({"x-api-key", "authorization", "x-master-token", WORKER_TOKEN_HEADER})
SMALL_BODY = 256 * 1024  # read whole below this: one write instead of a chunked stream


def end_to_end(
    source: CIMultiDictProxy[str] | CIMultiDict[str], drop: frozenset[str]
) -> CIMultiDict[str]:
    """The headers meant for the other end: no hop-by-hop ones, none named in Connection."""
    named = {h.strip().lower() for h in source.get("connection", "").split(",") if h.strip()}
    return CIMultiDict(
        (key, value)
        for key, value in source.items()
        if key.lower() not in drop and key.lower() not in named
    )


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(SMALL_BODY):
        yield chunk


class Proxy:
    def __init__(
        self,
        connect_timeout_s: float,
        read_timeout_s: float,
        per_worker: int = 256,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self._per_worker = per_worker
        self._credentials = dict(credentials or {})
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._http: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        # Kept alive below aiohttp's server-side 75 s, so the worker never closes one first.
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._per_worker, ttl_dns_cache=30, keepalive_timeout=30
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies are the client's business, not ours
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def get_json(
        self, route: ShardRoute, path: str, params: Mapping[str, str], timeout_s: float
    ) -> tuple[int, Any]:
        """The master's own read of a worker (not a client's request passed on): GET
        `path` with `params`: its status and JSON answer (None: not JSON), within
        `timeout_s` all told. ShardDown when it cannot be reached or times out."""
        assert self._http is not None
        try:
            async with self._http.get(
                route.url + path,
                params=params,
                # The pool does not decompress (forwarded bodies pass as sent).
                headers={**self._credentials, "Accept-Encoding": "identity"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as answer:
                raw = await answer.read()
        except TimeoutError:
            raise ShardSlow(route.id, f"no answer within {timeout_s:g} s") from None
        except (aiohttp.ClientError, ValueError) as error:
            raise ShardDown(route.id, f"cannot reach it ({type(error).__name__})") from None
        try:
            return answer.status, jsonio.loads(raw)
        except ValueError:
            return answer.status, None  # an answer, but not JSON: the caller says so

    async def forward(
        self, request: web.Request, route: ShardRoute, body: bytes | None
    ) -> web.StreamResponse:
        """Send `request` to the shard; `body` when it was already read (to find the slot)."""
        assert self._http is not None
        headers = end_to_end(request.headers, HOP_BY_HOP | PRIVATE)
        # The master's to set: these replace whatever the client sent.
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Host"] = request.host
        headers.update(self._credentials)
        data: bytes | AsyncIterator[bytes] | None = body
        if body is None and request.body_exists:
            length = request.content_length
            if length is not None and length <= SMALL_BODY:
                data = await request.read()
            else:
                data = _chunks(request)
        # As received, byte for byte: re-encoding could change what the worker sees.
        url = URL(route.url + request.rel_url.raw_path_qs, encoded=True)
        try:
            upstream = await self._http.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            )
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise ShardDown(route.id, f"cannot reach it ({type(error).__name__})") from None
        try:
            return await self._answer(request, route, upstream)
        finally:
            upstream.release()

    async def _answer(
        self, request: web.Request, route: ShardRoute, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        headers = end_to_end(upstream.headers, HOP_BY_HOP)
        length = upstream.content_length
        failures = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)
        if length is not None and length <= SMALL_BODY:
            try:
                body = await upstream.read()
            except failures as error:
                raise ShardDown(route.id, f"answer cut off ({type(error).__name__})") from None
            return web.Response(status=upstream.status, headers=headers, body=body)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(SMALL_BODY):
                await response.write(chunk)
        except failures:
            # Headers are gone already: cut the connection so the client sees a short answer.
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
