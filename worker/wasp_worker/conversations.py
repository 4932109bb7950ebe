"""Each slot's conversations, and the change sequence that incremental sync reads.

A conversation row summarises one chat of one slot: its last message, its unread
count and its peer's push name (derived from `messages`, recomputed by `refresh`
in the transaction of every message write), and what the user set on it here
(pinned, archived, muted until, tags), which WhatsApp never learns of.

`changes` is the sync sequence: every message stored or changed and every
conversation changed appends a row, in the same transaction as the change, with
the next `seq` (AUTOINCREMENT: never reused). A sync page is the rows after a
seq, in order, up to a seq boundary; the rows are never rewritten, so the same
cursor names the same rows, and a change committed after a page was read has a
larger seq than any row of that page, so it is on a later page.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from wasp.slots import Slot
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
)
_SELECT = ", ".join(_COLUMNS)
# Each sort as ascending keys (descending ones negated), the chat id last: a total order.
_ORDER: dict[Sort, tuple[str, ...]] = {
    "last": ("-coalesce(last_timestamp, 0)", "chat_id"),
    "unread": ("-unread", "-coalesce(last_timestamp, 0)", "chat_id"),
    "name": ("name IS NULL", "coalesce(name, '')", "chat_id"),
}


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
        name = None
        if not group:  # a group's push names are its members', not the group's
            found = db.execute(
                "SELECT push_name FROM messages WHERE slot=? AND chat_id=? AND direction='in' "
                "AND push_name IS NOT NULL ORDER BY timestamp DESC, rowid DESC LIMIT 1",
                (str(slot), chat_id),
            ).fetchone()
            name = found[0] if found else None
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
    record["tags"] = json.loads(record["tags"])
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
        self, slot: Slot, filters: Filters, sort: Sort, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the slot's conversations in `sort` order from position `cursor`, and
        the next page's cursor (None: this was the last)."""
        order = _ORDER[sort]
        clauses, values = _where(filters)
        where = "".join(f" AND {clause}" for clause in clauses)
        start = int(cursor) if cursor is not None else 0

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(
                f"SELECT {_SELECT} FROM conversations WHERE slot=?{where} "
                f"ORDER BY {', '.join(order)} LIMIT ? OFFSET ?",
                (str(slot), *values, limit + 1, start),
            ).fetchall()

        rows = await self._store.call(read)
        following = str(start + limit) if len(rows) > limit else None
        return [conversation(row) for row in rows[:limit]], following

    async def update(
        self, slot: Slot, chat_id: str, settings: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Set what `settings` names (pinned, archived, muted_until, tags) on the chat's
        conversation; the conversation after, or None when the slot has no such chat."""
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
                return conversation(found)

        return await self._store.call(write)
