"""The worker's HTTP handlers: slot operations under /api/accounts/{slot}/..., /health, /logs.

Who may call them is `trust` (the master's token); /metrics is served on its
own port (`metrics.metrics_app`).

The operations are declared in the core (`wasp.worker_api`); `HANDLERS` names
the handler of each. Every slot operation first checks the slot is this
worker's (409 otherwise); typed errors become JSON bodies in one middleware.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from wasp.errors import ApiError, error_response
from wasp.jsonio import json_answer
from wasp.messages import Destination, normalise
from wasp.openapi import path_value, query_values
from wasp.pacing import PacingOverride
from wasp.worker_api import (
    SYNC_WALK,
    ConversationPatch,
    DeadLettersQuery,
    EventsQuery,
    LogsQuery,
    MediaName,
    MessageId,
    OpenChatRequest,
    PairRequest,
    ReplayRequest,
    SyncQuery,
)
from wasp_worker import media
from wasp_worker.actions_http import ACTION_HANDLERS
from wasp_worker.backends.base import ChatSettingsChange, PairFailed
from wasp_worker.backends.simulator import SimulatorBackend
from wasp_worker.data_http import DATA_HANDLERS
from wasp_worker.errors import Conflict, NotFound
from wasp_worker.groups_http import GROUP_HANDLERS
from wasp_worker.http_support import Handler, read_body, send_read_receipts
from wasp_worker.live_feed import Cursor
from wasp_worker.pacer import Pacer
from wasp_worker.presence_http import PRESENCE_HANDLERS, chat_opened
from wasp_worker.send_http import send
from wasp_worker.state import (
    CONFIG,
    CONVERSATIONS,
    FEED,
    HISTORY,
    LOG,
    QUEUE,
    RUNNER,
    SESSIONS,
    SETTINGS,
    WEBHOOKS,
)
from wasp_worker.webhooks.http import CONSUMER_PREFIX


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


async def update_conversation(request: web.Request) -> web.Response:
    """Set what the body names on a conversation, then tell WhatsApp its pin, archive and
    mute (`whatsapp`: sent, pending, failed, unsupported; null for tags only, which
    WhatsApp has no notion of); 404 for a chat the slot has none of. They are recorded
    pending with the store's change, so that a session not connected sends them when it
    connects (`settings_sender`)."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    chat_id = normalise(path_value(request, "chat_id", Destination))
    body = await read_body(request, ConversationPatch)
    settings = body.model_dump(exclude_unset=True)
    if "tags" in settings:
        settings["tags"] = list(dict.fromkeys(settings["tags"]))
    at = time.time() if sessions.syncs_chats and ChatSettingsChange.of(settings) else None
    found = await request.app[CONVERSATIONS].update(slot, chat_id, settings, pending_at=at)
    if found is None:
        raise NotFound(f"no conversation {chat_id} for slot {slot}")
    # After the store has it: the store is the record, WhatsApp is told what it can be.
    told = await request.app[SETTINGS].patched(slot, chat_id, settings, at, found["last_timestamp"])
    return web.json_response(
        {"ok": True, "slot": str(slot), "conversation": found, "whatsapp": told}
    )


async def sync(request: web.Request) -> web.Response:
    """Messages and conversations changed since the cursor, at their current state."""
    slot = request.app[SESSIONS].own(request.match_info["slot"])
    query = query_values(request, SyncQuery)
    cursor = query.since or "0"
    since = int(cursor.removesuffix(SYNC_WALK))
    # From the start (no since, or 0) is a walk; `N.w` is one under way.
    page = await request.app[HISTORY].sync(
        slot, since, query.limit, cursor.endswith(SYNC_WALK) or not since
    )
    return json_answer({"ok": True, "slot": str(slot), **page})


async def open_chat(request: web.Request) -> web.Response:
    """A chat's latest messages, oldest first; its unread messages become read, and
    WhatsApp gets read receipts for them (`read_receipts` says whether it did)."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    body = await read_body(request, OpenChatRequest)
    chat_id = normalise(body.chat_id)
    messages, unread = await request.app[HISTORY].open_chat(slot, chat_id, body.limit)
    chat_opened(request, slot, chat_id)
    receipts = await send_read_receipts(request.app, slot, chat_id, unread)
    return web.json_response(
        {
            "ok": True,
            "slot": str(slot),
            "chat_id": chat_id,
            "messages": messages,
            "read_receipts": receipts,
        }
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


async def pacing(request: web.Request) -> web.Response:
    """The pace the account sends at, and its own override if it has one."""
    sessions, runner = request.app[SESSIONS], request.app[RUNNER]
    slot = sessions.own(request.match_info["slot"])
    return web.json_response(_pacing_answer(runner.pacer, str(slot)))


async def set_pacing(request: web.Request) -> web.Response:
    """Store the account's own pace on the volume, then follow it from the next message."""
    sessions, runner = request.app[SESSIONS], request.app[RUNNER]
    slot = sessions.own(request.match_info["slot"])
    override = await read_body(request, PacingOverride)
    await request.app[QUEUE].set_pacing(slot, override)
    runner.pacer.override(str(slot), override if override.model_dump(exclude_none=True) else None)
    request.app[LOG].emit("pacing_override", slot=str(slot), override=_public(override))
    return web.json_response(_pacing_answer(runner.pacer, str(slot)))


def _public(override: PacingOverride | None) -> dict[str, Any] | None:
    if override is None:
        return None
    return override.model_dump(mode="json", exclude_none=True) or None


def _pacing_answer(pacer: Pacer, slot: str) -> dict[str, Any]:
    return {
        "ok": True,
        "slot": slot,
        "pacing": pacer.rules(slot).model_dump(mode="json"),
        "override": _public(pacer.overrides.get(slot)),
    }


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


async def webhook_dead_letters(request: web.Request) -> web.Response:
    """The slot's dead letters: which event, for which subscription, why (never its data)."""
    slot = request.app[SESSIONS].own(request.match_info["slot"])
    query = query_values(request, DeadLettersQuery)
    consumer = CONSUMER_PREFIX + query.subscription if query.subscription else None
    found = await request.app[WEBHOOKS].outbox.dead_letters(str(slot), consumer)
    dead = [{"subscription": d.pop("consumer").removeprefix(CONSUMER_PREFIX), **d} for d in found]
    return web.json_response({"ok": True, "slot": str(slot), "dead": dead})


async def webhook_replay(request: web.Request) -> web.Response:
    slot = request.app[SESSIONS].own(request.match_info["slot"])
    body = await read_body(request, ReplayRequest)
    consumer = CONSUMER_PREFIX + body.subscription if body.subscription else None
    webhooks = request.app[WEBHOOKS]
    replayed = await webhooks.outbox.replay(str(slot), consumer, body.ids)
    webhooks.deliverer.wake()
    request.app[LOG].emit("webhook_replay", slot=str(slot), replayed=replayed)
    return web.json_response({"ok": True, "slot": str(slot), "replayed": replayed})


# Each operation of the worker's API (declared in `wasp.worker_api`) and its handler.
HANDLERS: dict[str, Handler] = {
    "health": health,
    "ready": ready,
    "logs": logs,
    "events": events,
    "connect": connect,
    "open": open_account,
    "chats": chats,
    "openChat": open_chat,
    "updateConversation": update_conversation,
    "sync": sync,
    "status": status,
    "logout": logout,
    "destroy": destroy,
    "scan": scan,
    "send": send,
    "schedule": send,
    "pair": pair,
    "media": media_file,
    "message": message_state,
    "pacing": pacing,
    "setPacing": set_pacing,
    "webhookDeadLetters": webhook_dead_letters,
    "webhookReplay": webhook_replay,
    **DATA_HANDLERS,
    **GROUP_HANDLERS,
    **ACTION_HANDLERS,
    **PRESENCE_HANDLERS,
}
