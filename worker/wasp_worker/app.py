"""The worker's HTTP API (aiohttp): slot operations under /api/accounts/{slot}/..., /health, /logs.

Every slot operation first checks the slot is this worker's (409 otherwise);
typed errors become JSON bodies in one middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, ValidationError

from wasp import logs as json_logs
from wasp import worker_api
from wasp.errors import ApiError, error_response
from wasp.kube import api_client
from wasp.messages import (
    Message,
    ScheduleRequest,
    SendRequest,
    normalise,
)
from wasp.openapi import add_routes, bind, path_value, query_values
from wasp.slots import Slot
from wasp.validation import problems
from wasp.worker_api import (
    EventsQuery,
    LogsQuery,
    MediaName,
    MessageId,
    OpenChatRequest,
    PairRequest,
)
from wasp_worker import media, warmup
from wasp_worker.backends.base import PairFailed
from wasp_worker.backends.neonize import NeonizeBackend
from wasp_worker.backends.simulator import SimulatorBackend
from wasp_worker.config import WorkerConfig
from wasp_worker.errors import BadRequest, Conflict, NotFound
from wasp_worker.events import EventLog
from wasp_worker.history import History
from wasp_worker.live_feed import Cursor, LiveFeed
from wasp_worker.metrics import registry_for
from wasp_worker.outbound import OutboundRunner
from wasp_worker.ownership import LEASE_THREADS, FileLease, KubeLease, Lease
from wasp_worker.queue import OutboundQueue
from wasp_worker.sessions import SessionManager

MAX_BODY_BYTES = 1 << 20
LEASE_RETRY_S = 1.0  # the lock file's: a quick syscall
GUARD_MAX_SLEEP_S = 60.0
GUARD_IDLE_S = 0.1
SESSIONS = web.AppKey("sessions", SessionManager)
CONFIG = web.AppKey("config", WorkerConfig)
LOG = web.AppKey("log", EventLog)
METRICS = web.AppKey("metrics", CollectorRegistry)
QUEUE = web.AppKey("queue", OutboundQueue)
RUNNER = web.AppKey("runner", OutboundRunner)
HISTORY = web.AppKey("history", History)
FEED = web.AppKey("feed", LiveFeed)
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])

Body = TypeVar("Body", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:  # the worker's own, and a path, query or body its types refuse
        return error_response(error)
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"ok": False, "error": "request body too large"}, status=413)
    except web.HTTPNotFound:  # no route: JSON like every other answer of this API
        return web.json_response({"ok": False, "error": "no such path"}, status=404)


async def health(request: web.Request) -> web.Response:
    config, sessions = request.app[CONFIG], request.app[SESSIONS]
    return web.json_response(
        {
            "ok": True,
            "worker": {
                "port": config.port,
                "slotFrom": str(config.slot_from),
                "slotTo": str(config.slot_to),
                "active": sessions.active,
                "maxActive": config.max_active,
            },
        }
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness is holding the shard's lease: a standby gets no traffic."""
    lease = request.app[SESSIONS].lease
    if lease is None or lease.held:
        return web.json_response({"ok": True})
    return web.json_response(
        {"ok": False, "error": f"not holding {lease.describe()}: {lease.reason}"}, status=503
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def logs(request: web.Request) -> web.Response:
    limit = query_values(request, LogsQuery).limit
    return web.json_response({"ok": True, "logs": request.app[LOG].recent(limit)})


async def events(request: web.Request) -> web.Response:
    """Live events after `after` (an event id), waiting up to `wait` seconds for one."""
    query = query_values(request, EventsQuery)
    cursor = Cursor.parse(query.after) if query.after is not None else None
    feed = request.app[FEED]
    batch = await feed.wait(cursor, query.wait, query.limit)
    return web.json_response(
        {"ok": True, "epoch": feed.epoch, "gap": batch.gap, "events": batch.events}
    )


async def connect(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    await sessions.connect(slot)
    return web.json_response({"ok": True, **sessions.status(slot)})


async def open_account(request: web.Request) -> web.Response:
    """Make sure the slot's session runs (as connect does) and list its chats."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    await sessions.connect(slot)
    chats = await request.app[HISTORY].chats(slot)
    return web.json_response({"ok": True, **sessions.status(slot), "chats": chats})


async def chats(request: web.Request) -> web.Response:
    """The slot's chats, latest first, without starting its session."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    return web.json_response({"ok": True, "chats": await request.app[HISTORY].chats(slot)})


async def open_chat(request: web.Request) -> web.Response:
    """A chat's latest messages, oldest first; its unread messages become read."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    body = await read_body(request, OpenChatRequest)
    chat_id = normalise(body.chat_id)
    messages = await request.app[HISTORY].open_chat(slot, chat_id, body.limit)
    return web.json_response(
        {"ok": True, "slot": str(slot), "chat_id": chat_id, "messages": messages}
    )


async def status(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    return web.json_response({"ok": True, **sessions.status(slot)})


async def logout(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    await sessions.logout(slot)
    return web.json_response({"ok": True, **sessions.status(slot)})


async def destroy(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    await sessions.stop(slot)
    return web.json_response({"ok": True, **sessions.status(slot)})


async def pair(request: web.Request) -> web.Response:
    """A pairing code to type on the phone, instead of scanning the QR."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    body = await read_body(request, PairRequest)
    try:
        code = await sessions.backend.pair(slot, body.phone)
    except PairFailed as error:
        raise Conflict(str(error)) from None
    return web.json_response({"ok": True, "slot": str(slot), "code": code})


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """Parse and validate a JSON body; anything else is a 400 that says why."""
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadRequest(f"invalid request: {problems(error, tags=_tags(model))}") from None


@cache
def _tags(model: type[BaseModel]) -> frozenset[str]:
    """The `type` values of a body that is a discriminated union (none for other bodies)."""
    return frozenset(model.model_json_schema().get("discriminator", {}).get("mapping", {}))


async def send(request: web.Request) -> web.Response:
    """Accept a message into the durable queue: 202 once it is on disk."""
    sessions, queue = request.app[SESSIONS], request.app[QUEUE]
    slot = sessions.own(request.match_info["slot"])
    message: Message
    if request.path.endswith("/schedule"):
        message = (await read_body(request, ScheduleRequest)).root
    else:
        message = (await read_body(request, SendRequest)).root
    row, created = await queue.enqueue(slot, message)
    request.app[RUNNER].wake.set()
    return web.json_response({"ok": True, "message": row.public()}, status=202 if created else 200)


async def message_state(request: web.Request) -> web.Response:
    sessions, queue = request.app[SESSIONS], request.app[QUEUE]
    slot = sessions.own(request.match_info["slot"])
    row: int = path_value(request, "id", MessageId)
    message = await queue.get(row)
    if message is None or message.slot != str(slot):
        return web.json_response(
            {"ok": False, "error": f"no message {row} for slot {slot}"}, status=404
        )
    return web.json_response({"ok": True, "message": message.public()})


async def media_file(request: web.Request) -> web.StreamResponse:
    """An inbound message's media, saved by the backend on the shard's volume."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    name: str = path_value(request, "name", MediaName)
    path = media.media_dir(request.app[CONFIG].work_dir, slot) / name
    if not path.is_file():
        return web.json_response(
            {"ok": False, "error": f"no media {name} for slot {slot}"}, status=404
        )
    return web.FileResponse(path)


async def scan(request: web.Request) -> web.Response:
    """Simulator only: log the slot in as if its QR code was scanned."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    backend = sessions.backend
    if not isinstance(backend, SimulatorBackend):
        raise NotFound("scan exists only for the simulator backend")
    if not await backend.scan(slot):
        raise Conflict(f"slot {slot} shows no QR code to scan")
    return web.json_response({"ok": True, **sessions.status(slot)})


async def hold_lease(app: web.Application, retry_s: float) -> None:
    """Take the shard's lease (waiting while another worker holds it) and renew it every
    `retry_s`; warm up the first time it is held, resume the suspended sessions after."""
    sessions, log = app[SESSIONS], app[LOG]
    lease = sessions.lease
    assert lease is not None
    warmed = was_held = waiting = False
    while True:
        started = time.monotonic()
        try:
            held = await lease.try_acquire()  # bounded in time, never raises: belt and braces
        except Exception as error:
            log.emit("lease_error", lease=lease.describe(), error=type(error).__name__)
            held = lease.held
        if held and was_held and lease.reason != "held":
            log.emit("lease_renew_failed", lease=lease.describe(), reason=lease.reason)
        if held and not was_held:
            log.emit("lease_acquired", lease=lease.describe())
            waiting = False
            first, warmed = not warmed, True
            work = run_warmup(app) if first else resume_sessions(app)
            app[BACKGROUND].append(asyncio.create_task(work))
        elif not held and was_held:
            log.emit("lease_lost", lease=lease.describe(), reason=lease.reason)
            await suspend_sessions(app)  # the watchdog did, unless the lease went another way
        elif not held and not waiting:
            log.emit("lease_wait", lease=lease.describe(), reason=lease.reason)
            waiting = True
        was_held = held
        await asyncio.sleep(max(0.0, retry_s - (time.monotonic() - started)))


async def guard_lease(app: web.Application) -> None:
    """The watchdog: stop every session the moment the renew deadline passes, whatever
    the renew loop is doing (its call may hang until its timeout)."""
    sessions, log = app[SESSIONS], app[LOG]
    lease = sessions.lease
    assert lease is not None
    while True:
        left = lease.remaining_s()
        if left > 0:
            await asyncio.sleep(min(left, GUARD_MAX_SLEEP_S))
            continue
        if sessions.active:
            log.emit("lease_deadline_passed", lease=lease.describe(), reason=lease.reason)
            await suspend_sessions(app)
        await asyncio.sleep(GUARD_IDLE_S)  # not held: no session can start; look again soon


async def suspend_sessions(app: web.Application) -> None:
    stopped = await app[SESSIONS].suspend_all()
    if stopped:
        app[LOG].emit("sessions_stopped", slots=[str(s) for s in stopped])


async def resume_sessions(app: web.Application) -> None:
    resumed = await app[SESSIONS].resume()
    app[LOG].emit("sessions_resumed", slots=[str(s) for s in resumed])


async def run_warmup(app: web.Application) -> None:
    config, sessions, log = app[CONFIG], app[SESSIONS], app[LOG]
    chosen = warmup.plan(
        warmup.read_list(config.config_dir / "roles.json"),
        warmup.read_list(config.config_dir / "accounts.json"),
        config.slots,
        sessions.active,
        config.max_active,
        config.warmup_limit,
    )
    for slot in chosen.disabled:
        log.emit("warmup_skip_disabled", slot=str(slot))
    if chosen.capacity_left == 0:
        log.emit("warmup_capacity_full", active=sessions.active, maxActive=config.max_active)
        return
    log.emit("warmup_start", count=len(chosen.start), slots=[str(s) for s in chosen.start])
    ok = fail = 0
    for slot in chosen.start:  # one after another: gentle on WhatsApp
        try:
            await sessions.connect(slot)
            ok += 1
        except Exception as error:
            fail += 1
            log.emit("warmup_slot_failed", slot=str(slot), error=type(error).__name__)
    log.emit("warmup_done", ok=ok, fail=fail)


# Each operation of the worker's API (declared in `wasp.worker_api`) and its handler.
HANDLERS: dict[str, Handler] = {
    "health": health,
    "ready": ready,
    "logs": logs,
    "metrics": metrics,
    "events": events,
    "connect": connect,
    "open": open_account,
    "chats": chats,
    "openChat": open_chat,
    "status": status,
    "logout": logout,
    "destroy": destroy,
    "scan": scan,
    "send": send,
    "schedule": send,
    "pair": pair,
    "media": media_file,
    "message": message_state,
}


def build_app(config: WorkerConfig, log: EventLog | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY_BYTES)
    event_log = log or EventLog()
    backend: SimulatorBackend | NeonizeBackend
    identity = config.pod_name or f"{socket.gethostname()}-{os.getpid()}"
    if config.backend == "simulator":
        backend = SimulatorBackend(
            config.work_dir, owner=identity, server_dir=config.simulator_server_dir
        )
    else:
        backend = NeonizeBackend(config.work_dir, breaker=config.breaker())
    app[CONFIG] = config
    app[BACKGROUND] = []
    app[LOG] = event_log
    app[FEED] = link = LiveFeed(
        config.shard_name or str(config.slots),
        config.master_internal_url,
        config.master_token,
        event_log,
    )
    lease: Lease
    if config.shard_name and config.pod_namespace:
        timing = config.lease_timing()
        lease = KubeLease(
            config.shard_name,
            config.pod_namespace,
            config.pod_name or socket.gethostname(),
            timing,
            api_client(None, pool_size=LEASE_THREADS),
        )
        renew_s = timing.retry_period_s
    else:
        lease = FileLease(config.work_dir / "worker.lock")
        renew_s = LEASE_RETRY_S
    app[SESSIONS] = sessions = SessionManager(config, backend, event_log, link, lease)
    app[METRICS] = registry = registry_for(sessions)
    app[QUEUE] = queue = OutboundQueue(config.work_dir / "queue.sqlite3")
    app[HISTORY] = history = History(config.work_dir / "history.sqlite3")
    app[RUNNER] = runner = OutboundRunner(queue, sessions, event_log, registry, history)
    received = Counter(
        "wasp_worker_messages_received_total", "Inbound messages received.", registry=registry
    )

    async def inbound(fields: dict[str, Any]) -> None:
        """A message for one of our sessions: count it, log its id (never its body), fan it out."""
        state = sessions.states.get(Slot.parse(fields["slot"]))
        if state is None or state.status != "CONNECTED":
            return
        received.inc()
        try:
            await history.record(Slot.parse(fields["slot"]), "in", fields)
        except Exception as error:  # the live event still goes out; only the history misses it
            event_log.emit("history_write_failed", slot=fields["slot"], error=type(error).__name__)
        event_log.emit("wa_message_in", slot=fields["slot"], wa_message_id=fields["wa_message_id"])
        link.emit("wa:message", fields)

    backend.on_inbound = inbound

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await link.open()
        tasks = app[BACKGROUND]
        tasks += [
            asyncio.create_task(hold_lease(app, renew_s)),
            asyncio.create_task(guard_lease(app)),
            asyncio.create_task(runner.run()),
        ]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await backend.close()
        await link.close()
        queue.close()
        history.close()
        await lease.release()

    async def release_long_polls(_: web.Application) -> None:
        # Before aiohttp waits for in-flight requests: else a poll its client left
        # holds the shutdown for up to its `wait`.
        link.release_waiters()

    app.on_shutdown.append(release_long_polls)
    app.cleanup_ctx.append(lifecycle)
    add_routes(app, bind(worker_api.ENDPOINTS, HANDLERS), worker_api.API)
    return app


def serve(config: WorkerConfig) -> None:
    json_logs.setup()  # aiohttp's own lines (server errors, access) as JSON, like the events
    log = EventLog()
    log.emit(
        "worker_start",
        port=config.port,
        slotFrom=str(config.slot_from),
        slotTo=str(config.slot_to),
        backend=config.backend,
    )
    if config.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    web.run_app(
        build_app(config, log),
        host=config.host,
        port=config.port,
        print=None,
        access_log_class=json_logs.JsonAccessLogger,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
    )
