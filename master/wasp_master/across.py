"""Reads across shards: conversations, search and unread counts of many slots at once.

`GET /api/conversations`, `/api/search` and `/api/unread` take `slots` (an
interval, see `selection`) and the filters of the worker's range endpoints
(declared once, in `wasp.worker_api`). Each shard whose range meets the slots
gets one read of its range endpoint (`scatter`), all at once. Listings are
merged by the shared sort key (`wasp.data_api.key_of`, which ends with the
item's slot and id, so it is a total order across shards) and cut to `limit`;
the last item's key is the one `next_cursor`, which every shard reads as "after
this place". A shard that cannot answer makes the answer `partial: true` with
its slots in `missing`; what is there is still right, and the next page (from
the same cursor) goes on with the shards that answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from wasp import data_api, worker_api
from wasp.jsonio import json_answer
from wasp.openapi import Route, query_values
from wasp.slots import Slot
from wasp_master.scatter import merge, partial, scatter
from wasp_master.selection import SLOTS_PATTERN, pieces
from wasp_master.state import KEY, master_of

Item = dict[str, Any]
SLOTS_DOC = (
    "The slots to read, `A1-A100` (an interval in slot order: `A40-B10` is A40 onwards, "
    "then B1..B10) or one slot `A7`; absent: every slot the API key may read. A slot "
    "outside a scoped key's ranges is a 403; no slot a shard serves, a 404."
)


class Slots(BaseModel):
    slots: str | None = Field(None, pattern=SLOTS_PATTERN, max_length=40, description=SLOTS_DOC)


class ConversationsQuery(Slots, worker_api.ConversationFilters):
    """Query of GET /api/conversations."""

    cursor: worker_api.KeyCursor | None = Field(
        None,
        description="`next_cursor` of the previous page (same filters and sort); absent: "
        "the first page.",
    )


class SearchQuery(Slots, worker_api.SearchFilters):
    """Query of GET /api/search."""

    cursor: worker_api.KeyCursor | None = Field(
        None, description="`next_cursor` of the previous page; absent: the newest hits."
    )


def _path(name: str) -> str:
    """The path of the worker's range endpoint of this name."""
    for endpoint in worker_api.ENDPOINTS:
        if endpoint.name == name:
            return endpoint.path
    raise LookupError(f"wasp.worker_api declares no endpoint {name!r}")


CONVERSATIONS, SEARCH, UNREAD = (
    _path(n) for n in ("dataConversations", "dataSearch", "dataUnread")
)


def _params(query: BaseModel) -> dict[str, str]:
    """The query as the worker's range endpoint takes it: the filters as sent, the
    cursor as `after`; `slots` becomes each piece's `from` and `to` (`scatter`)."""
    params: dict[str, str] = {}
    for name, value in query.model_dump(mode="json", exclude_none=True).items():
        if name == "slots":
            continue
        name = "after" if name == "cursor" else name
        params[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return params


async def _listing(
    request: web.Request,
    query: ConversationsQuery | SearchQuery,
    path: str,
    sort: data_api.Sort,
    reverse: bool,
) -> web.Response:
    master = master_of(request)

    def key(item: Item) -> data_api.Key:
        return data_api.key_of(item, sort)

    selected = pieces(master.directory.table.routes, query.slots, request[KEY])
    reads, missing = await scatter(master, selected, path, _params(query))
    more = any(read.body.get("next_cursor") for read in reads)
    pages = [read.body.get("items", []) for read in reads]
    items, following = merge(pages, more, key, reverse, query.limit)
    cursor = data_api.encode(key(items[-1]), sort) if following and items else None
    return json_answer({"ok": True, "items": items, "next_cursor": cursor, **partial(missing)})


async def conversations(request: web.Request) -> web.Response:
    query = query_values(request, ConversationsQuery)
    return await _listing(
        request, query, CONVERSATIONS, query.sort, data_api.descending(query.sort)
    )


async def search(request: web.Request) -> web.Response:
    query = query_values(request, SearchQuery)
    # Newest first: the `time` key, read from the largest down.
    return await _listing(request, query, SEARCH, "time", True)


class UnreadQuery(Slots, worker_api.UnreadQuery):
    """Query of GET /api/unread."""


async def unread(request: web.Request) -> web.Response:
    """Unread counts per slot and summed (each worker's own counts, added up: exact), and
    the unread chats of all the slots, latest first, merged by the `last` key a page at a
    time like the listings."""
    master = master_of(request)
    query = query_values(request, UnreadQuery)
    selected = pieces(master.directory.table.routes, query.slots, request[KEY])
    reads, missing = await scatter(master, selected, UNREAD, _params(query))
    totals = dict.fromkeys(
        (
            "messages",
            "conversations",
            "muted_or_archived_messages",
            "muted_or_archived_conversations",
        ),
        0,
    )
    per_slot: list[dict[str, Any]] = []
    for read in reads:
        for entry in read.body.get("by_slot", []):
            apart = entry["muted_or_archived"]
            counts = {
                "messages": int(entry["messages"]),
                "conversations": int(entry["conversations"]),
                "muted_or_archived_messages": int(apart["messages"]),
                "muted_or_archived_conversations": int(apart["conversations"]),
            }
            for name, value in counts.items():
                totals[name] += value
            per_slot.append({"slot": str(entry["slot"]), **counts})
    per_slot.sort(key=lambda entry: _slot_order(entry["slot"]))

    def key(item: Item) -> data_api.Key:
        return data_api.key_of(item, "last")

    more = any(read.body.get("next_cursor") for read in reads)
    chats, following = merge(
        [read.body.get("chats", []) for read in reads], more, key, True, query.limit
    )
    cursor = data_api.encode(key(chats[-1]), "last") if following and chats else None
    return json_answer(
        {
            "ok": True,
            "totals": totals,
            "slots": per_slot,
            "chats": chats,
            "next_cursor": cursor,
            **partial(missing),
        }
    )


def _slot_order(text: str) -> tuple[str, int]:
    slot = Slot.parse(text)
    return slot.prefix, slot.number


ROUTES = [
    Route(
        "GET",
        "/api/conversations",
        conversations,
        "Conversations of many slots across shards, filtered, in one order, a page at a "
        "time (one `next_cursor`); `partial` and `missing` name shards that did not answer",
        query=ConversationsQuery,
        responses=(200, 400, 404),
        name="conversationsAcrossShards",
    ),
    Route(
        "GET",
        "/api/search",
        search,
        "Full-text search of many slots' messages across shards, newest first, a page at a "
        "time (one `next_cursor`); `partial` and `missing` name shards that did not answer",
        query=SearchQuery,
        responses=(200, 400, 404),
        name="searchAcrossShards",
    ),
    Route(
        "GET",
        "/api/unread",
        unread,
        "Unread counts of many slots across shards, per slot and summed, and their unread "
        "chats, latest first, a page at a time (one `next_cursor`); `partial` and "
        "`missing` name shards that did not answer",
        query=UnreadQuery,
        responses=(200, 400, 404),
        name="unreadAcrossShards",
    ),
]
