"""HTTP handlers of groups and contacts: operations WhatsApp itself answers.

Each parses its body, query and path with the types `wasp.worker_api` declares
(bad input is a 400 before anything is sent), then needs the slot's session
logged in (409 with its state otherwise) and a backend that implements
`GroupsAndContacts` (501 naming the operation otherwise). Number checks are paced
per account (`number_checks`). Logs name the operation and the counts, never
names of groups or numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from wasp.openapi import path_value, query_values
from wasp.slots import Slot
from wasp.worker_api import (
    CreateGroupRequest,
    GroupId,
    InviteQuery,
    NumbersCheck,
    ParticipantsRequest,
    RenameGroupRequest,
    UserId,
)
from wasp_worker.backends.groups import GroupInfo, GroupRefused, GroupsAndContacts
from wasp_worker.errors import Conflict, NotFound, WorkerError
from wasp_worker.http_support import Handler, read_body
from wasp_worker.number_checks import NumberChecks
from wasp_worker.state import LOG, SESSIONS

NUMBER_CHECKS = web.AppKey("number_checks", NumberChecks)


class Unsupported(WorkerError):
    status = 501


class TooManyChecks(WorkerError):
    status = 429


def _user(text: str) -> str:
    """A number (an optional +) or phone JID, as its phone JID."""
    return text if text.endswith("@s.whatsapp.net") else f"{text.lstrip('+')}@s.whatsapp.net"


def _ready(request: web.Request, operation: str) -> tuple[Slot, GroupsAndContacts]:
    """The slot, when its session is logged in and its backend can do `operation`."""
    sessions = request.app[SESSIONS]
    slot = sessions.own(request.match_info["slot"])
    backend = sessions.backend
    if not isinstance(backend, GroupsAndContacts):
        raise Unsupported(f"{operation}: the {type(backend).__name__} cannot do it")
    state = sessions.states.get(slot)
    if state is None or state.status != "CONNECTED":
        current = "not started" if state is None else state.status
        raise Conflict(f"{operation} needs the session logged in; slot {slot} is {current}")
    return slot, backend


def _group(info: GroupInfo) -> dict[str, Any]:
    return {
        "id": info.group_id,
        "name": info.name,
        "owner": info.owner,
        "created_at": info.created_at,
        "participants": [dataclasses.asdict(p) for p in info.participants],
        "admins": [p.jid for p in info.participants if p.admin],
    }


def _answer(request: web.Request, slot: Slot, operation: str, **fields: Any) -> web.Response:
    request.app[LOG].emit("group_op", slot=str(slot), operation=operation)
    return web.json_response({"ok": True, "slot": str(slot), **fields})


async def _call(awaitable: Any) -> Any:
    """WhatsApp's refusals as the API's: 404 (no such group for the account) or 409."""
    try:
        return await awaitable
    except GroupRefused as refused:
        if refused.status == 404:
            raise NotFound(refused.reason) from None
        raise Conflict(refused.reason) from None


async def groups(request: web.Request) -> web.Response:
    slot, backend = _ready(request, "groups")
    found = await _call(backend.joined_groups(slot))
    return _answer(request, slot, "groups", groups=[_group(g) for g in found])


async def create_group(request: web.Request) -> web.Response:
    body = await read_body(request, CreateGroupRequest)
    slot, backend = _ready(request, "createGroup")
    members = list(dict.fromkeys(_user(p) for p in body.participants))
    info = await _call(backend.create_group(slot, body.name, members))
    return _answer(request, slot, "createGroup", group=_group(info))


def _group_id(request: web.Request) -> str:
    group_id: str = path_value(request, "group_id", GroupId)
    return group_id


async def group(request: web.Request) -> web.Response:
    group_id = _group_id(request)
    slot, backend = _ready(request, "group")
    info = await _call(backend.group_info(slot, group_id))
    return _answer(request, slot, "group", group=_group(info))


async def rename_group(request: web.Request) -> web.Response:
    group_id = _group_id(request)
    body = await read_body(request, RenameGroupRequest)
    slot, backend = _ready(request, "renameGroup")
    await _call(backend.rename_group(slot, group_id, body.name))
    info = await _call(backend.group_info(slot, group_id))
    return _answer(request, slot, "renameGroup", group=_group(info))


async def group_participants(request: web.Request) -> web.Response:
    group_id = _group_id(request)
    body = await read_body(request, ParticipantsRequest)
    slot, backend = _ready(request, "groupParticipants")
    jids = list(dict.fromkeys(_user(p) for p in body.participants))
    results = await _call(backend.update_participants(slot, group_id, body.action, jids))
    return _answer(
        request,
        slot,
        "groupParticipants",
        group_id=group_id,
        action=body.action,
        participants=[dataclasses.asdict(r) for r in results],
    )


async def group_invite(request: web.Request) -> web.Response:
    group_id = _group_id(request)
    query = query_values(request, InviteQuery)
    slot, backend = _ready(request, "groupInvite")
    link = await _call(backend.invite_link(slot, group_id, query.revoke))
    return _answer(request, slot, "groupInvite", group_id=group_id, link=link)


async def leave_group(request: web.Request) -> web.Response:
    group_id = _group_id(request)
    slot, backend = _ready(request, "leaveGroup")
    await _call(backend.leave_group(slot, group_id))
    return _answer(request, slot, "leaveGroup", group_id=group_id, left=True)


async def contacts_check(request: web.Request) -> web.Response:
    body = await read_body(request, NumbersCheck)
    slot, backend = _ready(request, "contactsCheck")
    numbers = list(dict.fromkeys(body.numbers))
    wait = request.app[NUMBER_CHECKS].take(str(slot), len(numbers))
    if wait:
        request.app[LOG].emit("number_checks_paced", slot=str(slot), numbers=len(numbers))
        raise TooManyChecks(
            f"number checks of slot {slot} are over their pace: retry in {int(wait)} s",
            headers={"Retry-After": str(int(wait))},
        )
    checks = await _call(backend.on_whatsapp(slot, numbers))
    return _answer(request, slot, "contactsCheck", results=[dataclasses.asdict(c) for c in checks])


def _jid(request: web.Request) -> str:
    return _user(path_value(request, "jid", UserId))


async def contact_picture(request: web.Request) -> web.Response:
    jid = _jid(request)
    slot, backend = _ready(request, "contactPicture")
    picture = await _call(backend.profile_picture(slot, jid))
    found = None if picture is None else dataclasses.asdict(picture)
    return _answer(request, slot, "contactPicture", jid=jid, picture=found)


async def contact_info(request: web.Request) -> web.Response:
    jid = _jid(request)
    slot, backend = _ready(request, "contactInfo")
    info = await _call(backend.user_info(slot, jid))
    return _answer(request, slot, "contactInfo", info=dataclasses.asdict(info))


async def _blocking(request: web.Request, blocked: bool) -> web.Response:
    operation = "blockContact" if blocked else "unblockContact"
    jid = _jid(request)
    slot, backend = _ready(request, operation)
    await _call(backend.set_blocked(slot, jid, blocked))
    return _answer(request, slot, operation, jid=jid, blocked=blocked)


async def block_contact(request: web.Request) -> web.Response:
    return await _blocking(request, True)


async def unblock_contact(request: web.Request) -> web.Response:
    return await _blocking(request, False)


GROUP_HANDLERS: dict[str, Handler] = {
    "groups": groups,
    "createGroup": create_group,
    "group": group,
    "renameGroup": rename_group,
    "groupParticipants": group_participants,
    "groupInvite": group_invite,
    "leaveGroup": leave_group,
    "contactsCheck": contacts_check,
    "contactPicture": contact_picture,
    "contactInfo": contact_info,
    "blockContact": block_contact,
    "unblockContact": unblock_contact,
}
