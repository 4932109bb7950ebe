"""The master's HTTP API and Socket.IO server (aiohttp): route, wake, fan out.

One HTTP stack: aiohttp (llhttp underneath) reads and frames every request
and writes every answer; nothing in the master touches HTTP bytes. A request
for a slot takes this path, one module per step:

    guard (this module's middleware: API key, body limit, typed errors → JSON)
      → routing   which shard owns the slot: the URL, else the JSON body
      → wake      a suspended shard is woken and waited for
      → proxy     a pooled keep-alive connection to the shard's worker,
                  the body streamed both ways
      → the worker's own app (`wasp_worker.app`)

Requests without a slot read and write the shared config (`shared_config`),
or go to the first shard. Live events reach Socket.IO clients through `live`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import socketio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wasp.openapi import ApiInfo, Route, add_routes
from wasp.slots import Slot, SlotError
from wasp_master import auth
from wasp_master.config import MasterConfig
from wasp_master.console import CONSOLE_ROUTES
from wasp_master.errors import BadRequest, MasterError, NoShard
from wasp_master.live import ALL, EventHub, socketio_server
from wasp_master.metrics import MasterMetrics
from wasp_master.proxy import Proxy
from wasp_master.routing import ShardRoute, slot_in_body, slot_in_path
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import KINDS, ConfigStore, Kind, validate
from wasp_master.wake import Patch, Waker

log = logging.getLogger("wasp.master")
MAX_BODY_BYTES = 1 << 20
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ShardHealth:
    running: bool = False
    active: int | None = None
    max_active: int | None = None


@dataclass
class Master:
    """Everything one master process holds; handlers reach it through the app."""

    config: MasterConfig
    directory: ShardDirectory
    store: ConfigStore
    metrics: MasterMetrics
    proxy: Proxy
    waker: Waker
    sio: socketio.AsyncServer
    hub: EventHub = field(init=False)
    health: dict[str, ShardHealth] = field(default_factory=dict)
    workspaces: dict[str, str] = field(default_factory=dict)  # slot -> ws, from accounts.json

    def __post_init__(self) -> None:
        self.hub = EventHub(self.sio, self.directory, self.metrics, self.workspace_of)

    def workspace_of(self, slot: str) -> str:
        return self.workspaces.get(slot, "default")

    async def refresh_workspaces(self) -> None:
        accounts = await self.store.read("accounts")
        self.workspaces = {
            str(a.get("slot")): str(a.get("ws") or "default") for a in accounts if a.get("slot")
        }


MASTER = web.AppKey("master", Master)


def _master(request: web.Request) -> Master:
    return request.app[MASTER]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API keys on /api/*, then typed errors as JSON bodies (one layer: it runs per request)."""
    try:
        if request.path.startswith("/api/"):
            given = auth.presented_key(request.headers)
            auth.check_api_key(given, _master(request).config.api_keys)
        return await handler(request)
    except MasterError as error:
        return web.json_response(error.body(), status=error.status, headers=error.headers)
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(
            {"ok": False, "error": f"request body too large (limit {MAX_BODY_BYTES} bytes)"},
            status=413,
        )


async def health(request: web.Request) -> web.Response:
    master = _master(request)
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


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(_master(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def shards(request: web.Request) -> web.Response:
    """Every shard with its range, state and capacity (what the console draws)."""
    master = _master(request)
    listed = []
    for route in master.directory.table.routes:
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
    kind = _kind(request)
    return web.json_response({"ok": True, kind: await _master(request).store.read(kind)})


async def write_config(request: web.Request) -> web.Response:
    """Replace the whole list, validated first; nothing changes when it is refused."""
    master, kind = _master(request), _kind(request)
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

    model_config = ConfigDict(extra="forbid")

    event: str = Field(pattern=r"^[a-z]{1,16}:[a-z_]{1,32}$")
    payload: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(None, pattern=r"^[0-9a-z]{1,16}\.[0-9]{1,18}$")
    shard: str | None = Field(None, max_length=63)


async def internal_emit(request: web.Request) -> web.Response:
    master = _master(request)
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


async def route_request(request: web.Request) -> web.StreamResponse:
    """Any other /api/* request: to the shard that owns its slot (or the first shard)."""
    master = _master(request)
    started = time.perf_counter()
    slot_text = slot_in_path(request.path)
    body: bytes | None = None
    if slot_text is None and request.body_exists:
        body = await request.read()
        with contextlib.suppress(ValueError):
            slot_text = slot_in_body(json.loads(body))
    route = _route_for(master, slot_text)
    shard = route.id
    code = 500
    try:
        woke = route.suspended
        route = await master.waker.ready(route)
        if woke:
            master.metrics.wakeups.labels(shard, "ok").inc()
        response = await master.proxy.forward(request, route, body)
        code = response.status
        return response
    except MasterError as error:
        code = error.status
        if route.suspended:
            master.metrics.wakeups.labels(shard, "timeout").inc()
        raise
    finally:
        master.metrics.routed(shard, code, time.perf_counter() - started)


def _route_for(master: Master, slot_text: str | None) -> ShardRoute:
    table = master.directory.table
    if slot_text is None:
        first = table.first()
        if first is None:
            raise NoShard("(none: no shards are configured)")
        return first
    try:
        slot = Slot.parse(slot_text)
    except SlotError as error:
        raise BadRequest(str(error)) from None
    route = table.lookup(slot)
    if route is None:
        raise NoShard(str(slot))
    return route


API = ApiInfo(
    title="wasp",
    description="The master: every /api/accounts/{slot}/... call is routed to the shard "
    "owning the slot (woken first if suspended). /api/* needs an API key when keys are "
    "configured (`x-api-key` or `Authorization: Bearer`). Live events: Socket.IO at "
    "/socket.io (`join` with {ws, since}).",
    reasons={
        200: "OK",
        202: "Accepted: stored on the shard's disk",
        400: "Bad input; nothing changed",
        401: "Missing or invalid API key or master token",
        404: "No shard serves this slot, or not found",
        409: "Slot not in the worker that answered, or a concurrent edit",
        413: "Body too large",
        429: "The shard's capacity is full",
        503: "The shard cannot answer now (down, waking up or not the lease holder); "
        "see Retry-After",
    },
)

MASTER_ROUTES = [
    Route("GET", "/health", health, "Master health and every shard's range and reachability"),
    Route("GET", "/metrics", metrics, "Prometheus metrics"),
    Route(
        "POST",
        "/internal/emit",
        internal_emit,
        "A worker's live event (needs x-master-token)",
        body=EmitRequest,
        responses=(200, 400, 401),
    ),
    Route("GET", "/api/shards", shards, "Shards: ranges, state, capacity", responses=(200, 401)),
    *[
        route
        for kind in KINDS
        for route in (
            Route(
                "GET",
                f"/api/{kind}",
                read_config,
                f"The shared {kind} list",
                responses=(200, 401),
            ),
            Route(
                "PUT",
                f"/api/{kind}",
                write_config,
                f"Replace the shared {kind} list (validated, written atomically)",
                responses=(200, 400, 401, 409, 413),
            ),
        )
    ],
]


def worker_routes() -> list[Route]:
    """The worker's slot operations, as the master serves them (routed by slot)."""
    from wasp_worker.app import ROUTES  # one source of truth for the slot API

    return [
        Route(
            r.method,
            r.path,
            route_request,
            r.summary,
            body=r.body,
            responses=tuple(sorted({*r.responses, 401, 404, 503})),
        )
        for r in ROUTES
        if r.path.startswith("/api/accounts/{slot}/")
    ]


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
            auth.check_api_key(given, master.config.api_keys)
        except MasterError as error:
            raise socketio.exceptions.ConnectionRefusedError(error.reason) from None
        master.metrics.clients.inc()

    async def disconnect(sid: str, reason: Any = None) -> None:
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
        if isinstance(data.get("ws"), str) and 0 < len(data["ws"]) <= 128:
            rooms.add(f"ws:{data['ws']}")
        if not rooms:
            return {"ok": False, "error": "join needs `ws` (a workspace) or `all: true`"}
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
            with contextlib.suppress(Exception):
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
) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)
    sio = socketio_server()
    master = Master(
        config=config,
        directory=directory,
        store=store,
        metrics=MasterMetrics(),
        proxy=Proxy(config.connect_timeout_s, config.read_timeout_s, config.worker_connections),
        waker=Waker(directory, unsuspend, config.wake_timeout_s),
        sio=sio,
    )
    app[MASTER] = master
    attach_socketio(app, master)
    add_routes(app, [*MASTER_ROUTES, *CONSOLE_ROUTES, *worker_routes()], API)
    app.router.add_route("*", "/api/{tail:.*}", route_request)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await master.proxy.open()
        http = aiohttp.ClientSession()
        master.hub.http = master.waker.http = http
        with contextlib.suppress(Exception):
            await master.refresh_workspaces()
        master.hub.sync()
        directory.listeners.append(master.hub.sync)
        tasks = [
            asyncio.create_task(watch_health(master)),
            asyncio.create_task(master.waker.keep_awake(config.prewarm)),
        ]
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
