"""Each slot's conversations, and the change sequence that incremental sync reads.

A conversation row summarises one chat of one slot: its last message, its unread
count and its peer's push name (derived from `messages`, recomputed by `refresh`
in the transaction of every message write), and what the user set on it here
(pinned, archived, muted until, tags), which WhatsApp never learns of.

`changes` is the sync sequence: every message stored or changed and every
conversation changed appends a row, in the same transaction as the change, with
the next `seq` (AUTOINCREMENT: never reused). A sync page is the rows after a
seq, in order, up to a seq boundary; the rows above a slot's horizon are never
rewritten (compaction clears those below it, `wasp_worker.compaction`), so the same
cursor names the same rows, and a change committed after a page was read has a
larger seq than any row of that page, so it is on a later page.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from wasp import data_api
from wasp.data_api import Key
from wasp.slots import Slot, SlotRange
from wasp_worker import pending_settings
from wasp_worker.db import SerialDatabase, transaction

SCHEMA = """
CREATE TABLE conversations (
  slot TEXT NOT NULL,
  chat_id TEXT NOT NULL,
  chat_type TEXT NOT NULL CHECK (chat_type IN ('direct', 'group')),
  name TEXT,
  last_message_id TEXT,
  last_timestamp REAL,
  unread INTEGER NOT NULL DEFAULT 0,
  pinned INTEGER NOT NULL DEFAULT 0,
  archived INTEGER NOT NULL DEFAULT 0,
  muted_until REAL,
  tags TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY (slot, chat_id)
);
CREATE TABLE changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  slot TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('message', 'conversation')),
  key TEXT NOT NULL
);
CREATE INDEX changes_slot ON changes (slot, seq)
"""

Kind = Literal["message", "conversation"]
Sort = Literal["last", "unread", "name"]
_COLUMNS = (
    "chat_id",
    "chat_type",
    "name",
    "last_message_id",
    "last_timestamp",
    "unread",
    "pinned",
    "archived",
    "muted_until",
    "tags",
    "id",
    "slot",
)
_SELECT = ", ".join(_COLUMNS)
# Each order's key columns (as `data_api.key_of` has them, without the slot), and its SQL
# order: descending orders read every column down, so the index (slot, last_timestamp, id)
# serves `last`.
_KEY: dict[str, tuple[str, ...]] = {
    "last": ("last_timestamp", "id"),
    "unread": ("unread", "last_timestamp", "id"),
    "name": ("name IS NULL", "coalesce(name, '')", "id"),
}
MAX_ID = data_api.MAX_ID
UNSET: Any = object()


def log_changes(db: sqlite3.Connection, slot: Slot, kind: Kind, keys: Iterable[str]) -> None:
    """Append these changes to the sync sequence, in the caller's transaction."""
    db.executemany(
        "INSERT INTO changes (slot, kind, key) VALUES (?, ?, ?)",
        [(str(slot), kind, key) for key in keys],
    )


def refresh(db: sqlite3.Connection, slot: Slot, chat_ids: Iterable[str]) -> None:
    """Recompute these chats' summaries from their messages, in the caller's transaction;
    a conversation whose summary changed (or is new) is logged as changed."""
    for chat_id in dict.fromkeys(chat_ids):
        last = db.execute(
            "SELECT wa_message_id, timestamp FROM messages WHERE slot=? AND chat_id=? "
            "ORDER BY timestamp DESC, rowid DESC LIMIT 1",
            (str(slot), chat_id),
        ).fetchone()
        if last is None:
            continue
        unread = db.execute(
            "SELECT count(*) FROM messages WHERE slot=? AND chat_id=? "
            "AND direction='in' AND read=0",
            (str(slot), chat_id),
        ).fetchone()[0]
        group = chat_id.endswith("@g.us")
        name = _group_name(db, slot, chat_id) if group else _direct_name(db, slot, chat_id)
        changed = db.execute(
            "INSERT INTO conversations (slot, chat_id, chat_type, name, last_message_id, "
            "last_timestamp, unread) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT (slot, chat_id) DO UPDATE SET name=excluded.name, "
            "last_message_id=excluded.last_message_id, "
            "last_timestamp=excluded.last_timestamp, unread=excluded.unread "
            "WHERE name IS NOT excluded.name OR last_message_id IS NOT excluded.last_message_id "
            "OR last_timestamp IS NOT excluded.last_timestamp OR unread IS NOT excluded.unread "
            "RETURNING chat_id",
            (str(slot), chat_id, "group" if group else "direct", name, *last, unread),
        ).fetchall()
        if changed:
            log_changes(db, slot, "conversation", [chat_id])


def _group_name(db: sqlite3.Connection, slot: Slot, chat_id: str) -> str | None:
    """A group's subject as the phone named it (`name_chat`): its members' push names are
    theirs, not the group's."""
    found = db.execute(
        "SELECT name FROM conversations WHERE slot=? AND chat_id=?", (str(slot), chat_id)
    ).fetchone()
    return found[0] if found else None


def _direct_name(db: sqlite3.Connection, slot: Slot, chat_id: str) -> str | None:
    """The name the account's phone saved for the peer, else the peer's latest push name."""
    if _has_contacts(db):
        saved = db.execute(  # one index lookup each, not an OR over the slot's contacts
            "SELECT name FROM contacts WHERE slot=?1 AND jid=?2 AND name IS NOT NULL "
            "UNION ALL SELECT name FROM contacts WHERE slot=?1 AND phone_jid=?2 "
            "AND name IS NOT NULL UNION ALL SELECT name FROM contacts WHERE slot=?1 AND lid=?2 "
            "AND name IS NOT NULL LIMIT 1",
            (str(slot), chat_id),
        ).fetchone()
        if saved:
            return str(saved[0])
    found = db.execute(
        "SELECT push_name FROM messages WHERE slot=? AND chat_id=? AND direction='in' "
        "AND push_name IS NOT NULL ORDER BY timestamp DESC, rowid DESC LIMIT 1",
        (str(slot), chat_id),
    ).fetchone()
    return found[0] if found else None


def _has_contacts(db: sqlite3.Connection) -> bool:
    """Whether the table exists: the back-fill of version 7 refreshes before version 8."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE name='contacts'").fetchone() is not None


def set_remote(
    db: sqlite3.Connection,
    slot: Slot,
    chat_id: str,
    settings: dict[str, Any],
    at: float | None = None,
) -> bool:
    """Settings the phone changed (pinned, archived, muted_until) at `at` (None: unknown),
    in the caller's transaction, but for those the API set that still count
    (`pending_settings.screen`); False when the slot has no conversation of the chat, or
    nothing changed."""
    settings = pending_settings.screen(db, slot, chat_id, settings, at)
    if not settings:
        return False
    assigned = ", ".join(f"{name}=?" for name in settings)
    differs = " OR ".join(f"{name} IS NOT ?" for name in settings)
    values = [int(v) if isinstance(v, bool) else v for v in settings.values()]
    changed = db.execute(
        f"UPDATE conversations SET {assigned} WHERE slot=? AND chat_id=? AND ({differs}) "
        "RETURNING chat_id",
        (*values, str(slot), chat_id, *values),
    ).fetchall()
    if changed:
        log_changes(db, slot, "conversation", [chat_id])
    return bool(changed)


def backfill(db: sqlite3.Connection) -> None:
    """The migration that adds the tables: every stored message is a change, in the order
    it was stored, and every chat gets its conversation."""
    for statement in SCHEMA.split(";"):
        db.execute(statement)
    db.execute(
        "INSERT INTO changes (slot, kind, key) "
        "SELECT slot, 'message', wa_message_id FROM messages ORDER BY rowid"
    )
    chats: dict[str, list[str]] = {}
    for slot, chat_id in db.execute(
        "SELECT slot, chat_id FROM messages GROUP BY slot, chat_id ORDER BY min(rowid)"
    ).fetchall():
        chats.setdefault(slot, []).append(chat_id)
    for slot, chat_ids in chats.items():
        refresh(db, Slot.parse(slot), chat_ids)


def conversation(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(_COLUMNS, row, strict=True))
    record["pinned"] = bool(record["pinned"])
    record["archived"] = bool(record["archived"])
    # Most conversations have no tags: a page of 50 need not parse "[]" 50 times.
    tags = record["tags"]
    record["tags"] = [] if tags == "[]" else json.loads(tags)
    return record


def conversations_named(
    db: sqlite3.Connection, slot: Slot, chat_ids: list[str]
) -> list[dict[str, Any]]:
    """These chats' conversations, in the order named."""
    marks = ",".join("?" * len(chat_ids))
    found = {
        row[0]: conversation(row)
        for row in db.execute(
            f"SELECT {_SELECT} FROM conversations WHERE slot=? AND chat_id IN ({marks})",
            (str(slot), *chat_ids),
        )
    }
    return [found[chat_id] for chat_id in chat_ids if chat_id in found]


def _after(sort: str, slot: Slot, cursor: Key) -> tuple[str, list[Any]]:
    """The SQL condition "this slot's rows strictly after `cursor`" in `sort` order: the
    cursor's key without its slot and id, then a bound on the id that stands for the
    (slot, id) tie-break (equal slots compare ids; a slot before or after the cursor's
    takes every id of a tie, or none)."""
    columns = _KEY[sort]
    *head, cursor_slot, cursor_id = cursor
    down = data_api.descending(sort)  # type: ignore[arg-type]
    if str(slot) == cursor_slot:
        bound = cursor_id
    elif down:
        bound = MAX_ID if str(slot) < cursor_slot else 0
    else:
        bound = 0 if str(slot) > cursor_slot else MAX_ID
    values = [int(v) if isinstance(v, bool) else v for v in head]
    return f"({', '.join(columns)}) {'<' if down else '>'} ({', '.join('?' * len(columns))})", [
        *values,
        bound,
    ]


# The slots an operation reads: named ones (a slot's own operation), or a range (the
# range operations), of which only the slots that have conversations are read: a range
# may span a billion slots.
Slots = list[Slot] | SlotRange
# Each slot with conversations, one index seek per slot (not a scan of every conversation).
_SLOTS_PRESENT = (
    "WITH RECURSIVE s(slot) AS (SELECT min(slot) FROM conversations UNION ALL "
    "SELECT (SELECT min(slot) FROM conversations WHERE slot > s.slot) FROM s "
    "WHERE s.slot IS NOT NULL) SELECT slot FROM s WHERE slot IS NOT NULL"
)


def present(db: sqlite3.Connection, slots: Slots) -> list[Slot]:
    """The slots to read: those named, or those of the range that have conversations (every
    stored message's chat has one)."""
    if isinstance(slots, list):
        return slots
    found = [Slot.parse(row[0]) for row in db.execute(_SLOTS_PRESENT)]
    return sorted((slot for slot in found if slot in slots), key=str)


def keyed_page(
    db: sqlite3.Connection,
    slots: Slots,
    filters: Filters,
    sort: Sort,
    cursor: Key | None,
    limit: int,
) -> tuple[list[dict[str, Any]], Key | None]:
    """`Conversations.page` on the database thread: each slot's next rows by its index,
    merged by the shared key (what the master does with the shards' pages)."""
    clauses, values = _where(filters)
    down = data_api.descending(sort)
    columns = _KEY[sort]
    order = ", ".join(f"{c} {'DESC' if down else 'ASC'}" for c in columns)
    chosen_slots = present(db, slots)
    if len(chosen_slots) == 1:
        # One slot (every per-slot listing): its rows straight from the index in order, one
        # statement; there is nothing to merge.
        [slot] = chosen_slots
        if cursor is not None:
            condition, bounds = _after(sort, slot, cursor)
            clauses, values = [*clauses, condition], [*values, *bounds]
        rows = db.execute(
            f"SELECT {_SELECT}, {', '.join(columns[:-1])} FROM conversations WHERE slot=?"
            f"{''.join(f' AND {c}' for c in clauses)} ORDER BY {order} LIMIT ?",
            (str(slot), *values, limit + 1),
        ).fetchall()
        width = len(_COLUMNS)
        page = [conversation(row[:width]) for row in rows[:limit]]
        if len(rows) <= limit:
            return page, None
        # The key as `data_api.encode` reads it (`name IS NULL` as 0/1 says the same).
        return page, (*rows[limit - 1][width:], str(slot), page[-1]["id"])
    # First the keys alone (for `last`, from the index only), merged across the slots; then
    # the rows of the page's keys: a range of 50 slots reads 50 pages of keys, one of rows.
    keys: list[Key] = []
    for slot in chosen_slots:
        where, bound = list(clauses), list(values)
        if cursor is not None:
            condition, bounds = _after(sort, slot, cursor)
            where.append(condition)
            bound += bounds
        for *head, row_id in db.execute(
            f"SELECT {', '.join(columns)} FROM conversations WHERE slot=?"
            f"{''.join(f' AND {c}' for c in where)} ORDER BY {order} LIMIT ?",
            (str(slot), *bound, limit + 1),
        ):
            if sort == "name":
                head[0] = bool(head[0])
            keys.append((*head, str(slot), row_id))
    keys.sort(reverse=down)
    chosen = keys[:limit]
    ids = [key[-1] for key in chosen]
    by_id = {
        row[_COLUMNS.index("id")]: conversation(row)
        for row in db.execute(
            f"SELECT {_SELECT} FROM conversations WHERE id IN ({','.join('?' * len(ids))})", ids
        )
    }
    page = [by_id[i] for i in ids]
    return page, chosen[-1] if len(keys) > limit else None


# A conversation counted apart from the badge: archived, or muted until a time to come.
_APART = "(archived OR coalesce(muted_until > ?, 0))"


def unread_totals(db: sqlite3.Connection, slots: Slots, now: float) -> list[dict[str, Any]]:
    """Per slot with unread chats (in slot order): unread messages and chats, those of muted
    or archived chats apart. One GROUP BY over the unread conversations' own index
    (`conversations_unread_slot`, in slot order and covering): named slots by seeks in it;
    a range by a walk of all of it, then kept to the range in Python (a range's slots are
    not an interval of the text column)."""
    columns = (
        f"slot, sum(CASE WHEN {_APART} THEN 0 ELSE unread END), sum(NOT {_APART}), "
        f"sum(CASE WHEN {_APART} THEN unread ELSE 0 END), sum({_APART})"
    )
    if isinstance(slots, list):
        if not slots:
            return []
        rows = db.execute(
            f"SELECT {columns} FROM conversations INDEXED BY conversations_unread_slot "
            f"WHERE slot IN ({','.join('?' * len(slots))}) AND unread > 0 GROUP BY slot",
            (now, now, now, now, *(str(slot) for slot in slots)),
        ).fetchall()
    else:
        rows = db.execute(
            f"SELECT {columns} FROM conversations INDEXED BY conversations_unread_slot "
            "WHERE unread > 0 GROUP BY slot",
            (now, now, now, now),
        ).fetchall()
        rows = [row for row in rows if Slot.parse(row[0]) in slots]
    found = [
        {
            "slot": slot,
            "messages": messages,
            "conversations": chats,
            "muted_or_archived": {"messages": apart_messages, "conversations": apart_chats},
        }
        for slot, messages, chats, apart_messages, apart_chats in rows
    ]
    return sorted(found, key=lambda entry: _slot_order(entry["slot"]))


def _slot_order(text: str) -> tuple[str, int]:
    slot = Slot.parse(text)
    return slot.prefix, slot.number


def unread_chats(
    db: sqlite3.Connection, slots: Slots, now: float, cursor: Key | None, limit: int
) -> tuple[list[dict[str, Any]], Key | None]:
    """The unread conversations of these slots in `last` order (latest first, then slot,
    then id, all descending), strictly after `cursor`, each flagged `muted`; and the key
    to continue after (None: last page). One slot reads its index in order; several, the
    unread conversations' own index (`conversations_unread_last`) read backwards, which is
    the `last` order, keeping the slots asked for and stopping after the page, then the
    page's rows by id. (A conversation with unread messages has a last message, so its
    last_timestamp is never NULL; were it, NULL sorts lowest as the key's 0 does.)"""
    chosen = present(db, slots)
    if len(chosen) == 1:
        page, following = keyed_page(db, chosen, Filters(unread=True), "last", cursor, limit)
    elif not chosen:
        page, following = [], None
    else:
        bound = "" if cursor is None else "AND (coalesce(last_timestamp, 0), slot, id) < (?, ?, ?) "
        keys = db.execute(
            "SELECT coalesce(last_timestamp, 0), slot, id FROM conversations "
            "INDEXED BY conversations_unread_last "
            f"WHERE unread > 0 AND slot IN ({','.join('?' * len(chosen))}) {bound}"
            "ORDER BY last_timestamp DESC, slot DESC, id DESC LIMIT ?",
            (*(str(slot) for slot in chosen), *(cursor or ()), limit + 1),
        ).fetchall()
        ids = [key[2] for key in keys[:limit]]
        by_id = {
            row[_COLUMNS.index("id")]: conversation(row)
            for row in db.execute(
                f"SELECT {_SELECT} FROM conversations WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
        }
        page = [by_id[i] for i in ids]
        following = tuple(keys[limit - 1]) if len(keys) > limit else None
    for chat in page:
        chat["muted"] = chat["muted_until"] is not None and chat["muted_until"] > now
    return page, following


def unread_summary(
    db: sqlite3.Connection, slots: Slots, now: float, cursor: Key | None, limit: int
) -> dict[str, Any]:
    """`Conversations.unread` on the database thread."""
    per_slot = unread_totals(db, slots, now)
    chats, following = unread_chats(db, slots, now, cursor, limit)
    return {
        "total_messages": sum(entry["messages"] for entry in per_slot),
        "total_conversations": sum(entry["conversations"] for entry in per_slot),
        "muted_or_archived": {
            "messages": sum(entry["muted_or_archived"]["messages"] for entry in per_slot),
            "conversations": sum(entry["muted_or_archived"]["conversations"] for entry in per_slot),
        },
        "by_slot": per_slot,
        "chats": chats,
        "next_cursor": following,
    }


@dataclass(frozen=True)
class Filters:
    """What `GET .../conversations` selects: each absent field selects every conversation."""

    unread: bool | None = None
    archived: bool | None = None
    pinned: bool | None = None
    tag: str | None = None
    q: str | None = None


def _where(filters: Filters) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    values: list[Any] = []
    if filters.unread is not None:
        clauses.append("unread > 0" if filters.unread else "unread = 0")
    if filters.archived is not None:
        clauses.append("archived = ?")
        values.append(int(filters.archived))
    if filters.pinned is not None:
        clauses.append("pinned = ?")
        values.append(int(filters.pinned))
    if filters.tag is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)")
        values.append(filters.tag)
    if filters.q is not None:
        clauses.append("instr(lower(name), lower(?)) > 0")
        values.append(filters.q)
    return clauses, values


class Conversations:
    """Reads and the user's settings of the shard's conversations."""

    def __init__(self, store: SerialDatabase) -> None:
        self._store = store

    async def page(
        self,
        slots: Slots,
        filters: Filters,
        sort: Sort,
        cursor: Key | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], Key | None]:
        """One page of these slots' conversations in `sort` order, strictly after the key
        `cursor` (None: from the first), and the key to continue after (None: this was
        the last page)."""
        return await self._store.read(
            lambda db: keyed_page(db, slots, filters, sort, cursor, limit)
        )

    async def get(self, slot: Slot, chat_id: str) -> dict[str, Any] | None:
        """The chat's conversation, or None when the slot has none."""
        return await self._store.read(
            lambda db: next(iter(conversations_named(db, slot, [chat_id])), None)
        )

    async def apply_remote(
        self,
        slot: Slot,
        chat_id: str,
        *,
        pinned: bool | None = None,
        archived: bool | None = None,
        muted_until: float | None = UNSET,
        at: float | None = None,
    ) -> bool:
        """A setting changed on the account's phone (None, or `muted_until` left out: not
        given; `muted_until=None` unmutes), at `at` where known. Applied to the chat's
        conversation with its change, unless the API set it since or has it pending
        (`pending_settings`); a chat without one (no message stored yet) is ignored:
        False, as when nothing changed."""
        settings: dict[str, Any] = {}
        if pinned is not None:
            settings["pinned"] = pinned
        if archived is not None:
            settings["archived"] = archived
        if muted_until is not UNSET:
            settings["muted_until"] = muted_until

        def write(db: sqlite3.Connection) -> bool:
            with transaction(db):
                return set_remote(db, slot, chat_id, settings, at)

        return await self._store.call(write)

    async def unread(
        self, slots: Slots, now: float, cursor: Key | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """These slots' unread counts, per slot (`by_slot`) and summed, muted (muted_until
        after `now`) or archived chats counted apart; and a page of their unread chats,
        latest first, after `cursor` (`next_cursor`: the key to continue after, or None)."""
        return await self._store.read(lambda db: unread_summary(db, slots, now, cursor, limit))

    async def update(
        self,
        slot: Slot,
        chat_id: str,
        settings: dict[str, Any],
        pending_at: float | None = None,
    ) -> dict[str, Any] | None:
        """Set what `settings` names (pinned, archived, muted_until, tags) on the chat's
        conversation; the conversation after, or None when the slot has no such chat.
        `pending_at`: its pin, archive and mute are for WhatsApp too, set at that time:
        recorded as pending in the same transaction (`pending_settings.record`)."""
        columns = {
            name: json.dumps(value) if name == "tags" else value for name, value in settings.items()
        }

        def write(db: sqlite3.Connection) -> dict[str, Any] | None:
            with transaction(db):
                found = db.execute(
                    f"SELECT {_SELECT} FROM conversations WHERE slot=? AND chat_id=?",
                    (str(slot), chat_id),
                ).fetchone()
                if found is None:
                    return None
                if columns:
                    assigned = ", ".join(f"{name}=?" for name in columns)
                    found = db.execute(
                        f"UPDATE conversations SET {assigned} WHERE slot=? AND chat_id=? "
                        f"RETURNING {_SELECT}",
                        (*columns.values(), str(slot), chat_id),
                    ).fetchone()
                    log_changes(db, slot, "conversation", [chat_id])
                if pending_at is not None:
                    pending_settings.record(db, slot, chat_id, settings, pending_at)
                return conversation(found)

        return await self._store.call(write)
