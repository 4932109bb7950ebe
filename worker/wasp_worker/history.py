"""Recent messages of each slot, by chat: what `open` and `openChat` show.

Inbound messages are recorded as they arrive, outbound ones once sent; receipts
move an outbound message's status forward (sent → delivered → read → played),
never back. A chat's unread count is its inbound messages not yet read;
`openChat` marks them read and returns them, so read receipts can go to WhatsApp.
Bodies live here on the shard's volume (the user's data), never in logs.

The `messages` table is in the shard's one database (`wasp_worker.store`): a
message that arrives is stored in the same transaction as its
`message.received` outbox event (`record`); the queue writes the messages it
sent, and the receipts of both, in its own transactions (`insert`, `move`).
Every write also appends to the sync sequence and refreshes the chat's
conversation in its transaction (`wasp_worker.conversations`), which `sync` reads.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Literal

from wasp.slots import Slot
from wasp_worker import conversations
from wasp_worker.conversations import log_changes
from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.webhooks import outbox as outbox_tables
from wasp_worker.webhooks.outbox import Outbox
from wasp_worker.webhooks.source import WebhookEvents

# The table at its current shape. Before the shard had one database it was a file of its
# own, `history.sqlite3`, whose version 0 lacked `status` and `sender_jid` (added by its
# version 1) and the sender's identities; `wasp_worker.store` copies such a file in once.
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
  status TEXT,
  sender_jid TEXT,
  sender_phone_jid TEXT,
  sender_lid TEXT,
  from_me INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (slot, wa_message_id)
);
CREATE INDEX IF NOT EXISTS messages_chat ON messages (slot, chat_id, timestamp);
"""
RECEIPT_ORDER = ("sent", "delivered", "read", "played")

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
    "status",
    "sender_phone_jid",
    "sender_lid",
    "from_me",
    "id",
    "message_type",
    "media_mime",
    "media_size",
    "media_name",
    "edited_at",
    "deleted_at",
)
_FIELDS = ", ".join(_KEYS)
# Every column of the table at version 3, when `wasp_worker.store` copies an old file in
# (version 8 added `id`, the type, the media's metadata, edits and tombstones).
V3_COLUMNS = ("slot", *_KEYS[: _KEYS.index("from_me") + 1], "sender_jid")
_INSERTED = (*_KEYS[: _KEYS.index("from_me") + 1], "message_type", "media_mime", "media_size")


def _message(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(_KEYS, row, strict=True))
    record["read"] = bool(record["read"])
    record["from_me"] = bool(record["from_me"])
    return record


def insert(
    db: sqlite3.Connection, slot: Slot, direction: Direction, fields: dict[str, Any]
) -> bool:
    """Store one message in the caller's transaction, with its change and its chat's
    conversation; False when its id is already there."""
    cursor = db.execute(
        f"INSERT OR IGNORE INTO messages (slot, {', '.join(_INSERTED)}, media_name, sender_jid) "
        f"VALUES ({', '.join('?' * (len(_INSERTED) + 3))})",
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
            int(direction == "out"),
            "sent" if direction == "out" else None,
            fields.get("sender_phone_jid"),
            fields.get("sender_lid"),
            int(bool(fields.get("from_me"))),
            fields.get("message_type") or fields.get("media_type") or "text",
            fields.get("mime_type"),
            fields.get("file_size"),
            fields.get("file_name"),
            fields.get("sender_jid_raw"),
        ),
    )
    if cursor.rowcount == 0:
        return False
    log_changes(db, slot, "message", [fields["wa_message_id"]])
    conversations.refresh(db, slot, [fields["chat_id"]])
    return True


def move(db: sqlite3.Connection, slot: Slot, message_ids: list[str], state: str) -> list[str]:
    """Move these outbound messages forward to `state`, in the caller's transaction; the
    ids that moved (a receipt for an earlier state, or for a message not recorded here,
    changes nothing)."""
    earlier = RECEIPT_ORDER[: RECEIPT_ORDER.index(state)]
    marks, states = ",".join("?" * len(message_ids)), ",".join("?" * len(earlier))
    moved = db.execute(
        f"UPDATE messages SET status=? WHERE slot=? AND direction='out' "
        f"AND wa_message_id IN ({marks}) AND (status IS NULL OR status IN ({states})) "
        "RETURNING wa_message_id",
        (state, str(slot), *message_ids, *earlier),
    ).fetchall()
    ids = [str(m[0]) for m in moved]
    log_changes(db, slot, "message", ids)
    return ids


class History:
    def __init__(self, store: SerialDatabase, outbox: Outbox) -> None:
        self._store = store
        self._outbox = outbox

    async def record(self, slot: Slot, direction: Direction, fields: dict[str, Any]) -> bool:
        """A message that arrived (the inbound event's fields; `out` when the account's own
        phone sent it) and its `message.received` event, in one transaction. False, and no
        event, when its id is already stored (WhatsApp delivers a message again after a
        reconnect)."""

        def write(db: sqlite3.Connection) -> bool:
            with transaction(db):
                stored = insert(db, slot, direction, fields)
                if stored:
                    outbox_tables.add(db, [WebhookEvents.from_inbound(fields)])
            return stored

        stored = await self._store.call(write)
        if stored:
            self._outbox.added()
        return stored

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

    async def open_chat(
        self, slot: Slot, chat_id: str, limit: int = 50
    ) -> tuple[list[dict[str, Any]], dict[str | None, list[str]]]:
        """The chat's latest messages, oldest first, and the inbound ones that were unread,
        by sender JID (a read receipt names the sender in groups); those are now read."""

        def read(
            db: sqlite3.Connection,
        ) -> tuple[list[dict[str, Any]], dict[str | None, list[str]]]:
            rows = db.execute(
                f"SELECT {_FIELDS} FROM messages WHERE slot=? AND chat_id=? "
                "ORDER BY timestamp DESC, rowid DESC LIMIT ?",
                (str(slot), chat_id, limit),
            ).fetchall()
            unread: dict[str | None, list[str]] = {}
            for message_id, sender in db.execute(
                "SELECT wa_message_id, sender_jid FROM messages "
                "WHERE slot=? AND chat_id=? AND direction='in' AND read=0 ORDER BY timestamp",
                (str(slot), chat_id),
            ):
                unread.setdefault(sender, []).append(message_id)
            with transaction(db):
                marked = db.execute(
                    "UPDATE messages SET read=1 WHERE slot=? AND chat_id=? AND read=0 "
                    "RETURNING wa_message_id",
                    (str(slot), chat_id),
                ).fetchall()
                log_changes(db, slot, "message", [m[0] for m in marked])
                conversations.refresh(db, slot, [chat_id])
            return [_message(r) for r in reversed(rows)], unread

        return await self._store.call(read)

    async def sync(self, slot: Slot, since: int, limit: int) -> dict[str, Any]:
        """The slot's messages and conversations changed after seq `since`: the next
        `limit` changes at most, each at its current state, once per page. `next` is the
        page's last seq (`since` when nothing changed); `has_more` says changes follow."""

        def read(db: sqlite3.Connection) -> dict[str, Any]:
            # One call on the database's one connection: no write lands between reads.
            changes = db.execute(
                "SELECT seq, kind, key FROM changes WHERE slot=? AND seq>? ORDER BY seq LIMIT ?",
                (str(slot), since, limit),
            ).fetchall()
            following = changes[-1][0] if changes else since
            more = db.execute(
                "SELECT 1 FROM changes WHERE slot=? AND seq>? LIMIT 1",
                (str(slot), following),
            ).fetchone()
            keys: dict[str, dict[str, None]] = {"message": {}, "conversation": {}}
            for _, kind, key in changes:
                keys[kind][key] = None
            ids = list(keys["message"])
            marks = ",".join("?" * len(ids))
            found = {
                row[0]: _message(row)
                for row in db.execute(
                    f"SELECT {_FIELDS} FROM messages WHERE slot=? AND wa_message_id IN ({marks})",
                    (str(slot), *ids),
                )
            }
            chats = conversations.conversations_named(db, slot, list(keys["conversation"]))
            return {
                "messages": [found[i] for i in ids if i in found],
                "conversations": chats,
                "next": str(following),
                "has_more": more is not None,
            }

        return await self._store.call(read)
