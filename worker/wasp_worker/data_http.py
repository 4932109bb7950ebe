"""The data API's HTTP handlers: conversations, messages, search, read marks, unread
counts, contacts (per slot), and the range operations the master gathers from.

Thin: each parses its query or body with the model `wasp.worker_api` declares,
turns cursors into keys (`wasp.data_api`), and calls the store-side module that
holds the SQL. Range operations (`/data/...`) take `from`/`to` slots, clamped to
the worker's own range; their items carry `slot`, and their cursor is the same
keyed cursor, so the master merges the shards' pages by one key.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from wasp import data_api
from wasp.data_api import Key, Sort
from wasp.jsonio import json_answer
from wasp.messages import Destination, normalise
from wasp.openapi import path_value, query_values
from wasp.slots import Slot, SlotRange
from wasp.worker_api import (
    ContactId,
    ContactsLookup,
    ConversationsQuery,
    DataConversationsQuery,
    DataSearchQuery,
    DataUnreadQuery,
    MarkReadRequest,
    MessagesQuery,
    SearchFilters,
    SearchQuery,
    SlotsRange,
    UnreadQuery,
)
from wasp_worker import data_status
from wasp_worker.conversations import Filters
from wasp_worker.data_state import CONTACTS, DATABASE, PAGES
from wasp_worker.errors import NotFound
from wasp_worker.http_support import Handler, read_body, send_read_receipts
from wasp_worker.message_pages import SearchFilters as MessageFilters
from wasp_worker.pending_settings import PendingSettings
from wasp_worker.presence_http import chat_opened
from wasp_worker.state import CONFIG, CONVERSATIONS, HISTORY, SESSIONS


def _key(text: str | None, sort: Sort) -> Key | None:
    return None if text is None else data_api.decode(text, sort)


def _cursor(key: Key | None, sort: Sort) -> str | None:
    return None if key is None else data_api.encode(key, sort)


def _slot(request: web.Request) -> Slot:
    return request.app[SESSIONS].own(request.match_info["slot"])


def _chat(request: web.Request) -> str:
    return normalise(path_value(request, "chat_id", Destination))


def _filters(query: Any) -> Filters:
    return Filters(query.unread, query.archived, query.pinned, query.tag, query.q)


def _search_filters(query: SearchFilters) -> MessageFilters:
    return MessageFilters(
        chat_id=normalise(query.chat_id) if query.chat_id else None,
        sender=normalise(query.sender) if query.sender else None,
        since=query.since,
        until=query.until,
        message_type=query.type,
    )


def _range(request: web.Request, query: SlotsRange) -> SlotRange | None:
    """The slots of `from`..`to` that this worker serves (None: none of them)."""
    config = request.app[CONFIG]
    own = SlotRange(config.slot_from, config.slot_to)
    first, last = query.slot_from or own.first, query.slot_to or own.last
    if first.prefix != own.prefix or last.prefix != own.prefix or first.number > last.number:
        return None
    return SlotRange(first, last).overlap(own)


async def conversations(request: web.Request) -> web.Response:
    """A page of the slot's conversations, filtered and sorted, after the cursor's key."""
    slot = _slot(request)
    query = query_values(request, ConversationsQuery)
    items, following = await request.app[CONVERSATIONS].page(
        [slot], _filters(query), query.sort, _key(query.cursor, query.sort), query.limit
    )
    return json_answer(
        {
            "ok": True,
            "slot": str(slot),
            "items": items,
            "next_cursor": _cursor(following, query.sort),
        }
    )


async def conversation(request: web.Request) -> web.Response:
    """The conversation, and `pending`: which of its pin, archive and mute set here
    WhatsApp does not have yet (one index lookup; the listings leave it out)."""
    slot, chat_id = _slot(request), _chat(request)
    found = await request.app[CONVERSATIONS].get(slot, chat_id)
    if found is None:
        raise NotFound(f"no conversation {chat_id} for slot {slot}")
    pending = await PendingSettings(request.app[DATABASE]).fields(slot, chat_id)
    return json_answer({"ok": True, "slot": str(slot), "conversation": found, "pending": pending})


async def messages(request: web.Request) -> web.Response:
    """A chat's messages, newest first before a cursor, or oldest first after one."""
    slot, chat_id = _slot(request), _chat(request)
    query = query_values(request, MessagesQuery)
    items, following = await request.app[PAGES].chat(
        slot, chat_id, _key(query.before, "chat"), _key(query.after, "chat"), query.limit
    )
    chat_opened(request, slot, chat_id)
    return json_answer(
        {
            "ok": True,
            "slot": str(slot),
            "chat_id": chat_id,
            "order": "oldest_first" if query.after is not None else "newest_first",
            "items": items,
            "next_cursor": _cursor(following, "chat"),
        }
    )


async def search(request: web.Request) -> web.Response:
    slot = _slot(request)
    query = query_values(request, SearchQuery)
    items, following = await request.app[PAGES].search(
        [slot], query.q, _search_filters(query), _key(query.cursor, "time"), query.limit
    )
    return json_answer(
        {"ok": True, "slot": str(slot), "items": items, "next_cursor": _cursor(following, "time")}
    )


async def mark_read(request: web.Request) -> web.Response:
    """Mark a chat's messages read here, then send WhatsApp the read receipts, as
    openChat does; `unread` is the conversation's count after."""
    slot = _slot(request)
    body = await read_body(request, MarkReadRequest)
    chat_id = normalise(body.chat_id)
    marked, unread = await request.app[HISTORY].mark_read(slot, chat_id, body.message_ids)
    receipts = await send_read_receipts(request.app, slot, chat_id, unread)
    found = await request.app[CONVERSATIONS].get(slot, chat_id)
    return json_answer(
        {
            "ok": True,
            "slot": str(slot),
            "chat_id": chat_id,
            "marked": marked,
            "unread": found["unread"] if found else 0,
            "read_receipts": receipts,
        }
    )


async def unread(request: web.Request) -> web.Response:
    """The slot's unread counts, and a page of its unread chats, latest first."""
    slot = _slot(request)
    query = query_values(request, UnreadQuery)
    summary = await request.app[CONVERSATIONS].unread(
        [slot], time.time(), _key(query.cursor, "last"), query.limit
    )
    del summary["by_slot"]  # one slot: the totals are its own
    summary["next_cursor"] = _cursor(summary["next_cursor"], "last")
    return json_answer({"ok": True, "slot": str(slot), **summary})


def _contact_key(text: str) -> str:
    """Phone digits name the phone JID; a JID names itself."""
    return text if "@" in text else f"{text.lstrip('+')}@s.whatsapp.net"


async def contact(request: web.Request) -> web.Response:
    slot = _slot(request)
    wanted = _contact_key(path_value(request, "jid", ContactId))
    found = await request.app[CONTACTS].lookup(slot, [wanted])
    if wanted not in found:
        raise NotFound(f"no contact {wanted} for slot {slot}")
    return json_answer({"ok": True, "slot": str(slot), "contact": found[wanted]})


async def contacts_lookup(request: web.Request) -> web.Response:
    """Each id's contact; the ids that name none, as sent."""
    slot = _slot(request)
    body = await read_body(request, ContactsLookup)
    keys = {text: _contact_key(text) for text in body.ids}
    found = await request.app[CONTACTS].lookup(slot, list(keys.values()))
    return json_answer(
        {
            "ok": True,
            "slot": str(slot),
            "found": [{"id": text, **found[key]} for text, key in keys.items() if key in found],
            "not_found": [text for text, key in keys.items() if key not in found],
        }
    )


async def data_conversations(request: web.Request) -> web.Response:
    query = query_values(request, DataConversationsQuery)
    slots = _range(request, query)
    items, following = await request.app[CONVERSATIONS].page(
        slots if slots is not None else [],
        _filters(query),
        query.sort,
        _key(query.after, query.sort),
        query.limit,
    )
    return json_answer(
        {
            "ok": True,
            "slots": _named(slots),
            "items": items,
            "next_cursor": _cursor(following, query.sort),
        }
    )


async def data_search(request: web.Request) -> web.Response:
    query = query_values(request, DataSearchQuery)
    slots = _range(request, query)
    items, following = await request.app[PAGES].search(
        slots if slots is not None else [],
        query.q,
        _search_filters(query),
        _key(query.after, "time"),
        query.limit,
    )
    return json_answer(
        {
            "ok": True,
            "slots": _named(slots),
            "items": items,
            "next_cursor": _cursor(following, "time"),
        }
    )


async def data_unread(request: web.Request) -> web.Response:
    """The range's unread counts per slot (`by_slot`) and summed, and a page of its unread
    chats in the `last` order the master merges by."""
    query = query_values(request, DataUnreadQuery)
    slots = _range(request, query)
    summary = await request.app[CONVERSATIONS].unread(
        slots if slots is not None else [], time.time(), _key(query.after, "last"), query.limit
    )
    summary["next_cursor"] = _cursor(summary["next_cursor"], "last")
    return json_answer({"ok": True, "slots": _named(slots), **summary})


async def data_status_handler(request: web.Request) -> web.Response:
    found = await data_status.read(request.app[DATABASE])
    return json_answer({"ok": True, **found})


def _named(slots: SlotRange | None) -> list[str] | None:
    """The range answered, as `[first, last]` (None: none of this worker's slots)."""
    return None if slots is None else [str(slots.first), str(slots.last)]


# Each data operation of the worker's API and its handler (`app` binds them with the rest).
DATA_HANDLERS: dict[str, Handler] = {
    "conversations": conversations,
    "conversation": conversation,
    "messages": messages,
    "search": search,
    "markRead": mark_read,
    "unread": unread,
    "contact": contact,
    "contactsLookup": contacts_lookup,
    "dataConversations": data_conversations,
    "dataSearch": data_search,
    "dataUnread": data_unread,
    "dataStatus": data_status_handler,
}
