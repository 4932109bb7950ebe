"""The master's HTTP API and Socket.IO server (aiohttp): route, wake, fan out.

One HTTP stack: aiohttp (llhttp underneath) reads and frames every request
and writes every answer; nothing in the master touches HTTP bytes. A request
for a slot takes this path, one module per step:

    guard       the middleware: framing (`limits`), API key and its scope
                (`auth`, `keys`), typed errors → JSON; a refused request never
                reaches a worker
      → forward   a slot request, counted per shard:
          routing   which shard owns the slot: the URL, else the JSON body
          wake      a suspended shard is woken and waited for
          proxy     a pooled keep-alive connection to the worker, the body
                    streamed both ways
      → the worker's own app (`wasp_worker.app`)

Requests without a slot read and write the shared config (`shared_config`),
read many shards at once (`across`: conversations, search, unread; `status`),
or go to the first shard. Live events reach Socket.IO clients through `live`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import socketio
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wasp import worker_api
from wasp.contract import MAX_BODY_BYTES
from wasp.openapi import ApiInfo, Route, add_routes
from wasp.slots import Slot, SlotError
from wasp_master import across, auth, proxy_credentials
from wasp_master.config import MasterConfig
from wasp_master.console import CONSOLE_ROUTES
from wasp_master.errors import BadRequest, MasterError
from wasp_master.forward import route_request
from wasp_master.guard import guard
from wasp_master.keys import KeyRing, Operation, follow
from wasp_master.live import ALL, socketio_server
from wasp_master.metrics import MasterMetrics
from wasp_master.proxy import Proxy
from wasp_master.proxy_credentials import CredentialStore, FileCredentialStore
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import KINDS, LISTS, ConfigStore, Kind, validate
from wasp_master.state import KEY, MASTER, Master, ShardHealth, master_of
from wasp_master.status import status
from wasp_master.wake import Patch, Waker
from wasp_master.webhook_store import DirectoryWebhookStore, WebhookStore
from wasp_master.webhooks import WebhooksWrite, read_webhooks, write_webhooks

log = logging.getLogger("wasp.master")


async def health(request: web.Request) -> web.Response:
    master = master_of(request)
    workers = []
    for route in master.directory.table.routes:
        url = urlsplit(route.url)
        workers.append(
            {
                **route.describe(),
                "port": url.port,
                "running": master.health.get(route.id, ShardHealth()).running,
            }
        )
    return web.json_response(
        {"ok": True, "master": {"port": master.config.port}, "workers": workers}
    )


async def shards(request: web.Request) -> web.Response:
    """Every shard with its range, state and capacity (what the console draws); a
    scoped key sees the shards that hold its slots."""
    master, key = master_of(request), request[KEY]
    listed = []
    for route in master.directory.table.routes:
        if not auth.sees_shard(key, route.slots, master.workspaces):
            continue
        seen = master.health.get(route.id, ShardHealth())
        listed.append(
            {
                **route.describe(),
                "suspended": route.suspended,
                "ready": route.ready,
                "running": seen.running,
                "active": seen.active,
                "maxActive": seen.max_active,
            }
        )
    return web.json_response({"ok": True, "shards": listed})


def _kind(request: web.Request) -> Kind:
    name = request.path.rsplit("/", 1)[-1]
    assert name in KINDS
    return name


async def read_config(request: web.Request) -> web.Response:
    master, kind = master_of(request), _kind(request)
    items = auth.visible(request[KEY], kind, await master.store.read(kind), master.workspace_of)
    return web.json_response({"ok": True, kind: items})


async def write_config(request: web.Request) -> web.Response:
    """Replace the whole list, validated first; nothing changes when it is refused."""
    master, kind = master_of(request), _kind(request)
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("body is not JSON") from None
    items = validate(kind, data)
    await master.store.write(kind, items)
    log.info(json.dumps({"event": "config_written", "kind": kind, "items": len(items)}))
    if kind == "accounts":
        await master.refresh_workspaces()
    return web.json_response({"ok": True, kind: items})


class EmitRequest(BaseModel):
    """Body of POST /internal/emit (a worker's live event)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event: str = Field(pattern=r"^[a-z]{1,16}:[a-z_]{1,32}$")
    payload: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(None, pattern=r"^[0-9a-z]{1,16}\.[0-9]{1,18}$")
    shard: str | None = Field(None, max_length=63)


async def internal_emit(request: web.Request) -> web.Response:
    master = master_of(request)
    auth.check_master_token(request.headers.get("x-master-token"), master.config.master_token)
    try:
        body = EmitRequest.model_validate(await request.json())
    except (ValueError, ValidationError) as error:
        raise BadRequest(f"invalid event: {str(error)[:300]}") from None
    shard = body.shard
    slot = body.payload.get("slot")
    if shard is None and isinstance(slot, str):
        with contextlib.suppress(SlotError):
            route = master.directory.table.lookup(Slot.parse(slot))
            shard = route.id if route else None
    shard = shard or "unknown"
    event_id = body.id or f"push.{time.time_ns()}"
    delivered = await master.hub.deliver(
        shard, {"id": event_id, "event": body.event, "payload": body.payload}
    )
    if delivered:
        log.debug(json.dumps({"event": "worker_event_forwarded", "name": body.event}))
    return web.json_response({"ok": True, "delivered": delivered})


API = ApiInfo(
    title="wasp",
    description="The master: every /api/accounts/{slot}/... call is routed to the shard "
    "owning the slot (woken first if suspended). /api/* needs an API key when keys are "
    "configured (`x-api-key` or `Authorization: Bearer`). Live events: Socket.IO at "
    "/socket.io (`join` with {ws, since}). Every error is JSON: {ok: false, error}; a "
    "documented path answers 405 (with Allow) for a method it does not take.",
    reasons={
        200: "OK",
        202: "Accepted: stored on the shard's disk",
        400: "Bad input (the error says which); nothing changed",
        401: "Missing or invalid API key or master token",
        403: "The API key's operations or scope do not cover this request, or a webhook's "
        "target is an internal address the allow-list does not name",
        404: "No shard serves this slot, or not found",
        409: "Slot not in the worker that answered, the session's state does not allow it, "
        "a concurrent edit, or a slot listed twice",
        410: "Gone: a sync cursor older than the change log's horizon; start again without it",
        413: "Body too large",
        415: "A file of a type the message's kind does not take (the error lists them)",
        422: "A well-formed body the operation cannot take, or values that do not fit "
        "together (the error says why); nothing changed",
        429: "The shard's capacity is full, or the account's number checks are over their "
        "pace (see Retry-After)",
        501: "The session's backend cannot do this operation (the error names it)",
        503: "The shard cannot answer now (down, waking up or not the lease holder); "
        "see Retry-After",
    },
    security_schemes={
        "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
        "MasterToken": {"type": "apiKey", "in": "header", "name": "x-master-token"},
    },
)

# What a key needs for each API route: the whole access policy, one table. Any
# /api/* route not listed (the catch-all for paths the master does not declare,
# routed by a body's slot) needs admin. build_app refuses a declared route missing here.
ACCESS: dict[tuple[str, str], Operation] = {
    ("GET", "/api/shards"): "read",
    ("GET", "/api/status"): "read",
    # Reads across shards: a scoped key reads inside its slot ranges (`selection`).
    **{("GET", route.path): "read" for route in across.ROUTES},
    **{("GET", f"/api/{kind}"): "read" for kind in KINDS},
    **{("PUT", f"/api/{kind}"): "config" for kind in KINDS},
    # Subscriptions decide where every message goes: config keys only (`allow`: admin).
    ("GET", "/api/webhooks"): "config",
    ("PUT", "/api/webhooks"): "config",
    # The proxies' passwords: config keys, like the webhooks' secrets.
    **{(route.method, route.path): "config" for route in proxy_credentials.ROUTES},
    ("GET", "/api/accounts/{slot}/webhooks/dead"): "config",
    ("POST", "/api/accounts/{slot}/webhooks/replay"): "config",
    ("GET", "/api/accounts/{slot}/status"): "read",
    ("GET", "/api/accounts/{slot}/chats"): "read",
    ("GET", "/api/accounts/{slot}/conversations"): "read",
    ("PATCH", "/api/accounts/{slot}/conversations/{chat_id}"): "session",
    ("GET", "/api/accounts/{slot}/sync"): "read",
    ("GET", "/api/accounts/{slot}/conversations/{chat_id}"): "read",
    ("GET", "/api/accounts/{slot}/conversations/{chat_id}/messages"): "read",
    ("POST", "/api/accounts/{slot}/conversations/{chat_id}/presence"): "send",
    ("GET", "/api/accounts/{slot}/search"): "read",
    ("POST", "/api/accounts/{slot}/markRead"): "session",
    ("GET", "/api/accounts/{slot}/unread"): "read",
    ("GET", "/api/accounts/{slot}/contacts/{jid}"): "read",
    ("POST", "/api/accounts/{slot}/contacts/lookup"): "read",
    ("GET", "/api/accounts/{slot}/groups"): "read",
    ("POST", "/api/accounts/{slot}/groups"): "session",
    ("GET", "/api/accounts/{slot}/groups/{group_id}"): "read",
    ("PATCH", "/api/accounts/{slot}/groups/{group_id}"): "session",
    ("POST", "/api/accounts/{slot}/groups/{group_id}/participants"): "session",
    ("GET", "/api/accounts/{slot}/groups/{group_id}/invite"): "session",  # a link lets anyone join
    ("POST", "/api/accounts/{slot}/groups/{group_id}/leave"): "session",
    ("POST", "/api/accounts/{slot}/contacts/check"): "read",
    ("GET", "/api/accounts/{slot}/contacts/{jid}/picture"): "read",
    ("GET", "/api/accounts/{slot}/contacts/{jid}/info"): "read",
    ("POST", "/api/accounts/{slot}/contacts/{jid}/block"): "session",
    ("POST", "/api/accounts/{slot}/contacts/{jid}/unblock"): "session",
    ("POST", "/api/accounts/{slot}/openChat"): "read",
    ("GET", "/api/accounts/{slot}/media/{name}"): "read",
    ("GET", "/api/accounts/{slot}/messages/{id}"): "read",
    ("POST", "/api/accounts/{slot}/send"): "send",
    ("POST", "/api/accounts/{slot}/schedule"): "send",
    ("POST", "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}/reaction"): "send",
    ("PATCH", "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}"): "send",
    ("DELETE", "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}"): "send",
    ("POST", "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}/vote"): "send",
    ("POST", "/api/accounts/{slot}/connect"): "session",
    ("POST", "/api/accounts/{slot}/open"): "session",
    ("POST", "/api/accounts/{slot}/logout"): "session",
    ("POST", "/api/accounts/{slot}/destroy"): "session",
    ("POST", "/api/accounts/{slot}/pair"): "session",
    ("POST", "/api/accounts/{slot}/scan"): "session",
    ("GET", "/api/accounts/{slot}/pacing"): "read",
    ("PUT", "/api/accounts/{slot}/pacing"): "session",
}

MASTER_ROUTES = [
    Route(
        "GET",
        "/health",
        health,
        "Master health and every shard's range and reachability",
        name="health",
    ),
    Route(
        "POST",
        "/internal/emit",
        internal_emit,
        "A worker's live event (needs x-master-token when one is configured)",
        body=EmitRequest,
        responses=(200, 400, 413),
        name="internalEmit",
    ),
    Route("GET", "/api/shards", shards, "Shards: ranges, state, capacity", name="shards"),
    Route(
        "GET",
        "/api/status",
        status,
        "Every shard: whether its worker answers, and its store's figures (counts, bytes "
        "on disk, last write, last change); unscoped keys only",
        name="fleetStatus",
    ),
    *across.ROUTES,
    *[
        route
        for kind in KINDS
        for route in (
            Route(
                "GET", f"/api/{kind}", read_config, f"The shared {kind} list", name=f"{kind}List"
            ),
            Route(
                "PUT",
                f"/api/{kind}",
                write_config,
                f"Replace the shared {kind} list (validated, written atomically)",
                body=LISTS[kind],
                responses=(200, 400, 409, 413),
                name=f"set{kind.capitalize()}List",
            ),
        )
    ],
    Route(
        "GET",
        "/api/webhooks",
        read_webhooks,
        "Webhook subscriptions, secrets masked",
        name="webhooks",
    ),
    Route(
        "PUT",
        "/api/webhooks",
        write_webhooks,
        "Replace every webhook subscription (validated, targets checked, written atomically); "
        "`secrets` holds the secrets generated now, shown this once",
        body=WebhooksWrite,
        responses=(200, 400, 403, 409, 413),
        name="setWebhooks",
    ),
    *proxy_credentials.ROUTES,
]


def worker_routes() -> list[Route]:
    """The worker's slot operations (declared in the core, one source of truth for the
    slot API), as the master serves them: each one routed to the slot's shard."""
    return [
        replace(
            endpoint.bind(route_request),
            # The worker's token is the master's to send: clients show API keys instead.
            security=(),
            responses=tuple(sorted({*endpoint.responses, 400, 404, 503} - {401})),
        )
        for endpoint in worker_api.ENDPOINTS
        if endpoint.path.startswith("/api/accounts/{slot}/")
    ]


def all_routes(config: MasterConfig) -> list[Route]:
    """What this master serves and documents; credentials only where they are configured."""
    declared = []
    for route in [*MASTER_ROUTES, *CONSOLE_ROUTES, *worker_routes()]:
        if route.path.startswith("/api/") and (config.api_keys or config.api_keys_file):
            # Scoped keys: a key outside its operations, slots or workspaces is a 403.
            route = replace(
                route,
                security=("ApiKey", "Bearer"),
                responses=tuple(sorted({*route.responses, 401, 403})),
            )
        elif route.path.startswith("/internal/") and config.master_token:
            route = replace(route, security=("MasterToken",))
        if route.security:
            route = replace(route, responses=tuple(sorted({*route.responses, 401})))
        declared.append(route)
    return declared


def attach_socketio(app: web.Application, master: Master) -> None:
    sio = master.sio

    async def connect(sid: str, environ: dict[str, Any], auth_data: Any = None) -> None:
        headers = {
            "x-api-key": environ.get("HTTP_X_API_KEY", ""),
            "authorization": environ.get("HTTP_AUTHORIZATION", ""),
        }
        given = auth_data.get("apiKey") if isinstance(auth_data, dict) else None
        given = given or auth.presented_key({k: v for k, v in headers.items() if v})
        try:
            master.sockets[sid] = auth.authenticate(given, master.keys)
        except MasterError as error:
            raise socketio.exceptions.ConnectionRefusedError(error.reason) from None
        master.metrics.clients.inc()

    async def disconnect(sid: str, reason: Any = None) -> None:
        master.sockets.pop(sid, None)
        master.metrics.clients.dec()

    async def join(sid: str, data: Any = None) -> dict[str, Any]:
        """`join` with a workspace name, or {ws | all, since: {shard: eventId}}."""
        if isinstance(data, str):
            data = {"ws": data}
        if not isinstance(data, dict):
            return {"ok": False, "error": "join needs a workspace name or {ws, since}"}
        rooms = set()
        if data.get("all"):
            rooms.add(ALL)
        workspace = data.get("ws")
        if isinstance(workspace, str) and 0 < len(workspace) <= 128:
            rooms.add(f"ws:{workspace}")
        else:
            workspace = None
        if not rooms:
            return {"ok": False, "error": "join needs `ws` (a workspace) or `all: true`"}
        key = master.sockets.get(sid)
        if key is None:
            return {"ok": False, "error": "not connected"}
        try:
            auth.authorize_join(key, ALL in rooms, workspace)
        except MasterError as error:
            return error.body()
        for room in rooms:
            await sio.enter_room(sid, room)
        since = data.get("since")
        replayed = 0
        if isinstance(since, dict):
            cursors = {str(k): str(v) for k, v in since.items() if isinstance(v, (str, type(None)))}
            for event, payload in await master.hub.replay(cursors, rooms):
                await sio.emit(event, payload, to=sid)
                replayed += 1
        return {"ok": True, "rooms": sorted(rooms), "replayed": replayed}

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    sio.on("join", join)
    sio.attach(app)


async def watch_health(master: Master) -> None:
    """Every shard's /health, to report `running` and capacity; never fails."""
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5))
    try:
        while True:
            routes = master.directory.table.routes
            answers = await asyncio.gather(*(_probe(http, r) for r in routes))
            for route, seen in zip(routes, answers, strict=True):
                master.health[route.id] = seen
                master.metrics.shard_up.labels(route.id).set(1 if seen.running else 0)
                if seen.active is not None:
                    master.metrics.shard_active.labels(route.id).set(seen.active)
                if seen.max_active is not None:
                    master.metrics.shard_max_active.labels(route.id).set(seen.max_active)
            for gone in set(master.health) - {r.id for r in routes}:
                del master.health[gone]
                master.metrics.forget(gone)
            await master.refresh_workspaces()
            await master.directory.changed(master.config.health_interval_s)
    finally:
        await http.close()


async def _probe(http: aiohttp.ClientSession, route: ShardRoute) -> ShardHealth:
    try:
        async with http.get(route.url + "/health") as response:
            if response.status != 200:
                return ShardHealth()
            worker = (await response.json()).get("worker", {})
            return ShardHealth(True, worker.get("active"), worker.get("maxActive"))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return ShardHealth()


def build_app(
    config: MasterConfig,
    directory: ShardDirectory,
    store: ConfigStore,
    unsuspend: Patch | None = None,
    webhooks: WebhookStore | None = None,
    credentials: CredentialStore | None = None,
) -> web.Application:
    routes = all_routes(config)
    unlisted = {(r.method, r.path) for r in routes if r.path.startswith("/api/")} - set(ACCESS)
    if unlisted:
        raise RuntimeError(f"API routes without an operation in ACCESS: {sorted(unlisted)}")
    app = web.Application(middlewares=[guard(ACCESS)], client_max_size=MAX_BODY_BYTES)
    sio = socketio_server()
    master = Master(
        config=config,
        directory=directory,
        store=store,
        metrics=MasterMetrics(),
        proxy=Proxy(
            config.connect_timeout_s,
            config.read_timeout_s,
            config.worker_connections,
            credentials=config.worker_headers(),
        ),
        waker=Waker(directory, unsuspend, config.wake_timeout_s),
        sio=sio,
        keys=KeyRing(config.api_keys, config.api_keys_file),
        webhooks=webhooks or DirectoryWebhookStore(config.config_dir, config.webhook_secrets_file),
        proxy_credentials=credentials
        or FileCredentialStore(
            config.proxy_credentials_file or config.config_dir / proxy_credentials.KEY
        ),
    )
    app[MASTER] = master
    attach_socketio(app, master)
    add_routes(app, routes, API)
    app.router.add_route("*", "/api/{tail:.*}", route_request)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await master.proxy.open()
        # The event long polls need the worker token; the wake's /health probe does not.
        http = aiohttp.ClientSession(headers=config.worker_headers())
        master.hub.http = master.waker.http = http
        await master.refresh_workspaces()
        master.hub.sync()
        directory.listeners.append(master.hub.sync)
        tasks = [
            asyncio.create_task(watch_health(master)),
            asyncio.create_task(master.waker.keep_awake(config.prewarm)),
        ]
        if master.keys.path is not None:
            tasks.append(
                asyncio.create_task(follow(master.keys, config.keys_poll_s, master.drop_revoked))
            )
        yield
        directory.listeners.remove(master.hub.sync)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await master.hub.close()
        await http.close()
        await master.proxy.close()

    app.cleanup_ctx.append(lifecycle)
    return app
