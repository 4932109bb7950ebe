"""Reading stored messages a page at a time: a chat's messages, and full-text search.

A page ends at its last message and the next starts strictly after it, so
messages stored meanwhile never shift a page. A chat's page is keyed by
(timestamp, slot, id) (`wasp.data_api`, order `chat`) and reads its index
(slot, chat_id, timestamp, id) from the cursor on: O(page). A search is keyed by
(id, slot) (order `time`): ids are time-ordered (`wasp_worker.message_ids`), so
it reads the FTS5 index itself newest first (rowid DESC, below the cursor's id)
and stops after a page: O(page), not O(matches), when the filters keep most
matches (a filter that keeps few of them makes it read on to find a page).

A user's search text never reaches FTS5's query syntax: `match_query` makes
each word a quoted string (FTS5 then reads operators and punctuation in it as
plain text) and the last one a prefix, so no input can be a syntax error.
Deleted messages (tombstones) have an empty body: they never match.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from dataclasses import dataclass
from typing import Any

from wasp.data_api import ChatKey, Key, TimeKey
from wasp.slots import Slot
from wasp_worker.conversations import MAX_ID, Slots, present
from wasp_worker.db import SerialDatabase
from wasp_worker.history import _FIELDS, _message
from wasp_worker.reactions import decorate

# Snippet markers around each matched word (plain text: the API returns no HTML).
MARK_START, MARK_END, ELLIPSIS = "[", "]", "…"
SNIPPET_TOKENS = 12


def _word_char(char: str) -> bool:
    """What FTS5's unicode61 tokenizer keeps in a token: letters, digits, marks (accents,
    which it then drops), private use."""
    category = unicodedata.category(char)
    return category[0] in "LNM" or category == "Co"


def words(text: str) -> list[str]:
    """The text's tokens as unicode61 cuts them (every other character separates)."""
    found, current = [], []
    for char in text:
        if _word_char(char):
            current.append(char)
        elif current:
            found.append("".join(current))
            current = []
    if current:
        found.append("".join(current))
    return found


def match_query(text: str) -> str | None:
    """An FTS5 query for the user's words, each a quoted string, all required, the last
    a prefix; None when the text has no word at all (it can match nothing)."""
    terms = words(text)
    if not terms:
        return None
    quoted = [f'"{term}"' for term in terms]  # a token has no quote: nothing to escape
    quoted[-1] += " *"
    return " AND ".join(quoted)


@dataclass(frozen=True)
class SearchFilters:
    chat_id: str | None = None
    sender: str | None = None
    since: float | None = None
    until: float | None = None
    message_type: str | None = None


def _time_after(slot: Slot, cursor: Key, down: bool) -> tuple[str, list[Any]]:
    """ "Strictly after `cursor`" for this slot's messages, in time order read down
    (newest first) or up, as (timestamp, id) against the cursor's timestamp and an id
    bound standing for the (slot, id) tie-break."""
    stamp, cursor_slot, cursor_id = cursor
    if str(slot) == cursor_slot:
        bound = cursor_id
    elif down:
        bound = MAX_ID if str(slot) < cursor_slot else 0
    else:
        bound = 0 if str(slot) > cursor_slot else MAX_ID
    return f"(m.timestamp, m.id) {'<' if down else '>'} (?, ?)", [stamp, bound]


def _key(item: dict[str, Any]) -> ChatKey:
    return (float(item["timestamp"]), str(item["slot"]), int(item["id"]))


def chat_page(
    db: sqlite3.Connection,
    slot: Slot,
    chat_id: str,
    before: Key | None,
    after: Key | None,
    limit: int,
) -> tuple[list[dict[str, Any]], ChatKey | None]:
    """A chat's messages: after `after` oldest first (below `before` when both are
    given), else before `before` (or from the newest) newest first; and the key to
    continue from in the same direction (None: nothing follows)."""
    down = after is None
    clauses, values = ["m.slot=?", "m.chat_id=?"], [str(slot), chat_id]
    for cursor, reading_down in ((before, True), (after, False)):
        if cursor is not None:
            clause, bound = _time_after(slot, cursor, reading_down)
            clauses.append(clause)
            values += bound
    direction = "DESC" if down else "ASC"
    rows = db.execute(
        f"SELECT {_prefixed(_FIELDS)} FROM messages m WHERE {' AND '.join(clauses)} "
        f"ORDER BY m.timestamp {direction}, m.id {direction} LIMIT ?",
        (*values, limit + 1),
    ).fetchall()
    items = decorate(db, [_message(row) for row in rows[:limit]])
    return items, _key(items[-1]) if len(rows) > limit else None


def _prefixed(fields: str) -> str:
    return ", ".join(f"m.{name.strip()}" for name in fields.split(","))


def search(
    db: sqlite3.Connection,
    slots: Slots,
    text: str,
    filters: SearchFilters,
    cursor: Key | None,
    limit: int,
) -> tuple[list[dict[str, Any]], TimeKey | None]:
    """These slots' messages matching `text`, newest first, strictly after `cursor`, each
    with a `snippet`; and the key to continue after (None: the last page)."""
    query = match_query(text)
    if query is None:
        return [], None
    names = [str(slot) for slot in present(db, slots)]
    if not names:
        return [], None
    # One pass over the matches for every slot, in the index's rowid order, newest first.
    clauses = ["messages_fts MATCH ?", f"m.slot IN ({','.join('?' * len(names))})"]
    values: list[Any] = [query, *names]
    clauses.append("m.deleted_at IS NULL")
    if filters.chat_id is not None:
        clauses.append("m.chat_id=?")
        values.append(filters.chat_id)
    if filters.sender is not None:
        clauses.append("? IN (m.sender_phone_jid, m.sender_lid, m.sender_jid)")
        values.append(filters.sender)
    if filters.since is not None:
        clauses.append("m.timestamp >= ?")
        values.append(filters.since)
    if filters.until is not None:
        clauses.append("m.timestamp < ?")
        values.append(filters.until)
    if filters.message_type is not None:
        clauses.append("m.message_type = ?")
        values.append(filters.message_type)
    if cursor is not None:
        # The rowid bound is what FTS5 takes as a constraint; the (id, slot) one drops the
        # cursor's own id when its slot does not come after this row's.
        row, cursor_slot = cursor
        clauses += ["messages_fts.rowid <= ?", "(m.id, m.slot) < (?, ?)"]
        values += [row, row, cursor_slot]
    # CROSS JOIN keeps the index the outer loop, so the LIMIT stops it after a page.
    rows = db.execute(
        f"SELECT {_prefixed(_FIELDS)}, snippet(messages_fts, 0, '{MARK_START}', "
        f"'{MARK_END}', '{ELLIPSIS}', {SNIPPET_TOKENS}) FROM messages_fts "
        f"CROSS JOIN messages m ON m.id = messages_fts.rowid WHERE {' AND '.join(clauses)} "
        "ORDER BY messages_fts.rowid DESC LIMIT ?",
        (*values, limit + 1),
    ).fetchall()
    found = [{**_message(row[:-1]), "snippet": row[-1]} for row in rows]
    page = decorate(db, found[:limit])
    return page, (int(page[-1]["id"]), str(page[-1]["slot"])) if len(found) > limit else None


class MessagePages:
    """The shard's messages, read a page at a time on the database's thread."""

    def __init__(self, store: SerialDatabase) -> None:
        self._store = store

    async def chat(
        self, slot: Slot, chat_id: str, before: Key | None, after: Key | None, limit: int
    ) -> tuple[list[dict[str, Any]], ChatKey | None]:
        return await self._store.read(lambda db: chat_page(db, slot, chat_id, before, after, limit))

    async def search(
        self,
        slots: Slots,
        text: str,
        filters: SearchFilters,
        cursor: Key | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], TimeKey | None]:
        return await self._store.read(lambda db: search(db, slots, text, filters, cursor, limit))
