"""The first step of every request: framing, API key and scope, then errors as JSON.

One middleware (it runs on every request, so one layer, not three):

1. `limits.check_framing`: framing a worker could read differently is refused,
   the connection closed after the answer;
2. on /api/*: `auth.authenticate` (which key) and `auth.authorize` (its
   operations and scope against the route's operation and slot), so a refused
   request never reaches a worker;
3. typed errors (`wasp.errors.ApiError`) become `{"ok": false, "error"}` bodies,
   as do aiohttp's own 413 and 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from wasp.contract import MAX_BODY_BYTES
from wasp.errors import ApiError, error_response
from wasp_master import auth
from wasp_master.keys import KeyRecord, Operation
from wasp_master.limits import check_framing
from wasp_master.state import KEY, Master, master_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Access = Mapping[tuple[str, str], Operation]  # (method, path template) -> operation


def guard(access: Access) -> Middleware:
    """The middleware, given the operation each API route needs."""

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _guard(request, handler, access)

    return guarded


async def _guard(request: web.Request, handler: Handler, access: Access) -> web.StreamResponse:
    try:
        check_framing(request)
        if request.path.startswith("/api/"):
            master = master_of(request)
            key = auth.authenticate(auth.presented_key(request.headers), master.keys)
            request[KEY] = key
            _authorize(request, master, key, access)
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(
            {"ok": False, "error": f"request body too large (limit {MAX_BODY_BYTES} bytes)"},
            status=413,
        )
    except web.HTTPNotFound:  # no route: JSON like every other answer of this API
        return web.json_response({"ok": False, "error": "no such path"}, status=404)


def _authorize(request: web.Request, master: Master, key: KeyRecord, access: Access) -> None:
    """The route's operation (admin for any route not listed) on its slot."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else ""
    operation = access.get((request.method, template), "admin")
    slot = auth.slot_for(key, request.match_info.get("slot"))
    auth.authorize(key, operation, slot, master.workspace_of(str(slot)) if slot else "default")
