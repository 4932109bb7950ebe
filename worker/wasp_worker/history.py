"""Recent messages of each slot, by chat: what `open` and `openChat` show.

Inbound messages are recorded as they arrive, outbound ones once sent. A chat's
unread count is its inbound messages not yet read; `openChat` marks them read.
Bodies live here on the shard's volume (the user's data), never in logs.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

from wasp.slots import Slot
from wasp_worker.db import SerialDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  slot TEXT NOT NULL,
  wa_message_id TEXT NOT NULL,
  chat_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
  sender TEXT NOT NULL,
  push_name TEXT,
  body TEXT NOT NULL DEFAULT '',
  media_type TEXT,
  media_url TEXT,
  timestamp REAL NOT NULL,
  read INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (slot, wa_message_id)
);
CREATE INDEX IF NOT EXISTS messages_chat ON messages (slot, chat_id, timestamp);
"""

Direction = Literal["in", "out"]
_KEYS = (
    "wa_message_id",
    "chat_id",
    "direction",
    "sender",
    "push_name",
    "body",
    "media_type",
    "media_url",
    "timestamp",
    "read",
)
_FIELDS = ", ".join(_KEYS)


def _message(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(_KEYS, row, strict=True))
    record["read"] = bool(record["read"])
    return record


class History:
    def __init__(self, path: Path) -> None:
        self._store = SerialDatabase(path, SCHEMA, "history")

    async def record(
        self, slot: Slot, direction: Direction, fields: dict[str, Any], read: bool = False
    ) -> None:
        """Store one message (the inbound event's fields); a repeated id is ignored."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT OR IGNORE INTO messages (slot, {_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    str(slot),
                    fields["wa_message_id"],
                    fields["chat_id"],
                    direction,
                    fields["from"],
                    fields.get("push_name"),
                    fields.get("body") or "",
                    fields.get("media_type"),
                    fields.get("media_url"),
                    fields.get("timestamp") or time.time(),
                    int(read or direction == "out"),
                ),
            )

        await self._store.call(write)

    async def chats(self, slot: Slot, limit: int = 50) -> list[dict[str, Any]]:
        """The slot's chats, latest activity first, each with its last message and unread count."""

        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT chat_id, max(timestamp), sum(direction='in' AND read=0), count(*) "
                "FROM messages WHERE slot=? GROUP BY chat_id ORDER BY max(timestamp) DESC LIMIT ?",
                (str(slot), limit),
            ).fetchall()
            chats = []
            for chat_id, last_ts, unread, total in rows:
                last = db.execute(
                    f"SELECT {_FIELDS} FROM messages WHERE slot=? AND chat_id=? "
                    "ORDER BY timestamp DESC, rowid DESC LIMIT 1",
                    (str(slot), chat_id),
                ).fetchone()
                chats.append(
                    {
                        "chat_id": chat_id,
                        "chat_type": "group" if chat_id.endswith("@g.us") else "direct",
                        "last_timestamp": last_ts,
                        "unread": int(unread or 0),
                        "messages": total,
                        "last_message": _message(last),
                    }
                )
            return chats

        return await self._store.call(read)

    async def open_chat(self, slot: Slot, chat_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The chat's latest messages, oldest first; its inbound messages become read."""

        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT {_FIELDS} FROM messages WHERE slot=? AND chat_id=? "
                "ORDER BY timestamp DESC, rowid DESC LIMIT ?",
                (str(slot), chat_id, limit),
            ).fetchall()
            db.execute(
                "UPDATE messages SET read=1 WHERE slot=? AND chat_id=? AND read=0",
                (str(slot), chat_id),
            )
            return [_message(r) for r in reversed(rows)]

        return await self._store.call(read)

    def close(self) -> None:
        self._store.close()
