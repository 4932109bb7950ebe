"""Only the master may call a worker: every route but the probes needs its token.

A worker's port is reachable by any pod of the cluster wherever the network
plugin does not enforce NetworkPolicy, and its routes start sessions and send
messages with no API key: the master checks keys and scopes before it forwards.
So the worker checks the master's credential itself, a token shared through the
chart's Secret (WORKER_TOKENS) that the master sends on every forwarded request
and every long poll. Kubelet probes (/health, /ready) stay open: they carry no
credential and change nothing.

Tokens are compared as SHA-256 digests in constant time against every valid
token, without stopping at the first match, so neither a token's length nor its
position in the list shows in the timing. No token is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from wasp.contract import WORKER_TOKEN_HEADER
from wasp.errors import ApiError, error_response
from wasp.worker_api import OPEN

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthorized(ApiError):
    status = 401


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def accepted(given: str | None, tokens: tuple[str, ...]) -> bool:
    """Whether `given` is one of `tokens`: every token is compared, whatever matched."""
    if not given:
        return False
    presented = _digest(given)
    match = False
    for token in tokens:
        match |= hmac.compare_digest(presented, _digest(token))
    return match


def check(given: str | None, tokens: tuple[str, ...]) -> None:
    """Unauthorized (401), with the reason, unless `given` is a valid token."""
    if not tokens:
        raise Unauthorized(
            "this worker has no WORKER_TOKENS configured: it accepts no caller but its probes"
        )
    if not given:
        raise Unauthorized(f"missing {WORKER_TOKEN_HEADER}: only the wasp master may call a worker")
    if not accepted(given, tokens):
        raise Unauthorized(f"invalid {WORKER_TOKEN_HEADER}")


def master_only(tokens: tuple[str, ...], insecure: bool = False) -> Middleware:
    """The middleware refusing (401, before any handler runs) a caller without a valid token;
    `insecure` (WORKER_INSECURE, a worker on one's own machine) lets every caller through."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not insecure and request.path not in OPEN:
            try:
                check(request.headers.get(WORKER_TOKEN_HEADER), tokens)
            except Unauthorized as error:
                return error_response(error)
        return await handler(request)

    return guard
