"""HTTP handlers of the actions on a message of the slot's store: reaction, edit, delete for
everyone and poll vote (declared in `wasp.worker_api`, bodies in `wasp.message_actions`).

Each is queued like a send (202 with the queue row; a known idempotency key, or a
second delete of the same message, answers the first row with 200), in the chat's
lane: its row's destination is the chat, so it never overtakes a message queued
before it. Everything a request can be refused for is checked before anything is
queued: the backend must send the kind (501), the message must be in the store for
that chat (404), the rules of the action must hold (409 for edit and delete, 422
for what the body names). The queue applies the action to the store once it is sent
(`queue.finish`). Logs name slots, chats and ids, never texts or emoji.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from wasp.message_actions import (
    EDIT_WINDOW_S,
    ActionRefused,
    EditRequest,
    ReactionRequest,
    VoteRequest,
    check_emoji,
    check_options,
)
from wasp.messages import Destination, normalise
from wasp.openapi import path_value
from wasp.slots import Slot
from wasp.worker_api import WaMessageId
from wasp_worker.backends.base import KnowsAccount
from wasp_worker.backends.groups import GroupRefused, GroupsAndContacts
from wasp_worker.data_state import DATABASE
from wasp_worker.errors import Conflict, NotFound, WorkerError
from wasp_worker.http_support import Handler, read_body
from wasp_worker.queue import Action, ActionKind
from wasp_worker.state import LOG, QUEUE, RUNNER, SESSIONS


class Unprocessable(WorkerError):
    """A well-formed body the action cannot take."""

    status = 422


class Unsupported(WorkerError):
    status = 501


@dataclass(frozen=True)
class Target:
    """The message an action names, as the slot's store has it."""

    wa_message_id: str
    own: bool
    sender: str
    timestamp: float
    message_type: str
    payload: dict[str, Any]
    deleted: bool


def _read_target(slot: Slot, chat_id: str, message_id: str, db: sqlite3.Connection) -> Any:
    return db.execute(
        "SELECT direction, from_me, coalesce(sender_jid, sender_phone_jid, sender), timestamp, "
        "coalesce(message_type, media_type, 'text'), payload, deleted_at FROM messages "
        "WHERE slot=? AND chat_id=? AND wa_message_id=?",
        (str(slot), chat_id, message_id),
    ).fetchone()


async def _target(request: web.Request, kind: ActionKind) -> tuple[Slot, str, Target]:
    """The slot, the chat and the message an action names, once the backend is known to
    send `kind` (501) and the message is in the store for that chat (404)."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    backend = sessions.backend
    if kind not in backend.sends:
        name = type(backend).__name__.removesuffix("Backend").lower()
        raise Unsupported(f"send.{kind}: not supported by the {name} backend")
    chat_id = normalise(path_value(request, "chat_id", Destination))
    message_id: str = path_value(request, "message_id", WaMessageId)
    found = await request.app[DATABASE].call(lambda db: _read_target(slot, chat_id, message_id, db))
    if found is None:
        raise NotFound(f"no message {message_id} in {chat_id} for slot {slot}")
    direction, from_me, sender, timestamp, message_type, payload, deleted_at = found
    target = Target(
        wa_message_id=message_id,
        own=direction == "out" or bool(from_me),
        sender=str(sender),
        timestamp=float(timestamp),
        message_type=str(message_type),
        payload=json.loads(payload) if payload else {},
        deleted=deleted_at is not None,
    )
    return slot, chat_id, target


def _me(request: web.Request, slot: Slot) -> str:
    """Who the account is in its chats: its own JID when the backend knows it, else the
    slot (as the store names the sender of what the account sent)."""
    backend = request.app[SESSIONS].backend
    if isinstance(backend, KnowsAccount):
        return backend.account_jid(slot) or str(slot)
    return str(slot)


def _details(
    request: web.Request, slot: Slot, chat_id: str, target: Target, **what: Any
) -> dict[str, Any]:
    return {
        "chat": chat_id,
        "target": target.wa_message_id,
        **what,
        "target_from_me": target.own,
        "target_sender": target.sender,
        "me": _me(request, slot),
    }


async def _known(request: web.Request, slot: Slot, key: str | None) -> web.Response | None:
    """The first row of a retried idempotency key (200), before the rules are checked
    again: the retry may come after they stopped holding (an edit's 15 minutes)."""
    if key is None:
        return None
    found = await request.app[QUEUE].by_key(slot, key)
    return None if found is None else web.json_response({"ok": True, "message": found.public()})


async def _queue(request: web.Request, slot: Slot, action: Action) -> web.Response:
    row, created = await request.app[QUEUE].enqueue_action(slot, action)
    request.app[RUNNER].wake.set()
    request.app[LOG].emit(
        "action_queued",
        slot=str(slot),
        kind=action.kind,
        chat_id=action.chat_id,
        target=action.details["target"],
        id=row.id,
        created=created,
    )
    return web.json_response({"ok": True, "message": row.public()}, status=202 if created else 200)


def _alive(kind: str, target: Target) -> None:
    if target.deleted:
        raise Conflict(f"{kind}: message {target.wa_message_id} was deleted")


async def react(request: web.Request) -> web.Response:
    slot, chat_id, target = await _target(request, "reaction")
    body = await read_body(request, ReactionRequest)
    if known := await _known(request, slot, body.idempotency_key):
        return known
    try:
        emoji = check_emoji(body.emoji)
    except ActionRefused as refused:
        raise Unprocessable(str(refused)) from None
    _alive("reaction", target)
    details = _details(request, slot, chat_id, target, emoji=emoji)
    return await _queue(request, slot, Action("reaction", chat_id, body.idempotency_key, details))


async def edit(request: web.Request) -> web.Response:
    slot, chat_id, target = await _target(request, "edit")
    body = await read_body(request, EditRequest)
    if known := await _known(request, slot, body.idempotency_key):
        return known
    message_id = target.wa_message_id
    if not target.own:
        raise Conflict(f"edit: message {message_id} was not sent by the account")
    _alive("edit", target)
    if target.message_type != "text":
        raise Conflict(f"edit: message {message_id} is a {target.message_type}, not a text")
    if time.time() - target.timestamp > EDIT_WINDOW_S:
        raise Conflict(f"edit: message {message_id} is older than WhatsApp's 15 minutes")
    details = _details(request, slot, chat_id, target, text=body.text)
    return await _queue(request, slot, Action("edit", chat_id, body.idempotency_key, details))


async def delete(request: web.Request) -> web.Response:
    slot, chat_id, target = await _target(request, "delete")
    if not target.own:
        await _check_admin(request, slot, chat_id, target.wa_message_id)
    details = _details(request, slot, chat_id, target)
    return await _queue(request, slot, Action("delete", chat_id, None, details))


async def _check_admin(request: web.Request, slot: Slot, chat_id: str, message_id: str) -> None:
    """Someone else's message goes for everyone only in a group the account is an admin of
    (asked of WhatsApp: admins change)."""
    refused = f"delete: message {message_id} was not sent by the account"
    if not chat_id.endswith("@g.us"):
        raise Conflict(refused)
    backend = request.app[SESSIONS].backend
    me = _me(request, slot)
    if not isinstance(backend, GroupsAndContacts) or me == str(slot):
        raise Conflict(f"{refused}, and the {type(backend).__name__} cannot tell admins")
    try:
        info = await backend.group_info(slot, chat_id)
    except GroupRefused as error:
        raise Conflict(f"{refused}: {error.reason}") from None
    except Exception as error:  # the session is not connected: WhatsApp cannot be asked
        raise Conflict(f"{refused}, and the group's admins are unknown now") from error
    if not any(p.jid == me and p.admin for p in info.participants):
        raise Conflict(f"{refused}, and the account is not an admin of {chat_id}")


async def vote(request: web.Request) -> web.Response:
    slot, chat_id, target = await _target(request, "vote")
    body = await read_body(request, VoteRequest)
    if known := await _known(request, slot, body.idempotency_key):
        return known
    poll = target.payload.get("poll") if target.message_type == "poll" else None
    if not isinstance(poll, dict):
        raise Unprocessable(f"vote: message {target.wa_message_id} is not a poll")
    _alive("vote", target)
    offered = [str(option) for option in poll.get("options") or []]
    try:
        options = check_options(body.options, offered, int(poll.get("selectable_count") or 0))
    except ActionRefused as refused:
        raise Unprocessable(str(refused)) from None
    details = _details(request, slot, chat_id, target, options=options)
    return await _queue(request, slot, Action("vote", chat_id, body.idempotency_key, details))


# Each action's operation in `wasp.worker_api` and its handler.
ACTION_HANDLERS: dict[str, Handler] = {
    "react": react,
    "editMessage": edit,
    "deleteMessage": delete,
    "vote": vote,
}
