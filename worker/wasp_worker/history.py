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

What WhatsApp changes later comes through here too, each in one transaction: an
edit (`edit`, with a `message.edited` event), a deletion for everyone (`revoke`:
a tombstone, with a `message.deleted` event), the phone's history sync after a
login (`import_history`: no `message.received` events, history is not news), and
read marks (`mark_read`, whose receipts the caller sends).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

from wasp import jsonio
from wasp.slots import Slot
from wasp.webhooks import Event
from wasp.worker_api import MEDIA_NAME_PATTERN, SYNC_WALK
from wasp_worker import contacts, conversations, media
from wasp_worker.conversations import log_changes
from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.errors import Gone
from wasp_worker.message_ids import next_id
from wasp_worker.reactions import decorate
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
# openChat's read mark: `direction='in'` (outbound messages are stored read) lets the
# partial index `messages_unread` find the chat's unread rows instead of scanning the chat.
MARK_CHAT_READ = (
    "UPDATE messages SET read=1 WHERE slot=? AND chat_id=? AND direction='in' AND read=0 "
    "RETURNING wa_message_id"
)

Direction = Literal["in", "out"]
_MEDIA_NAME = re.compile(MEDIA_NAME_PATTERN)
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
    "quoted_id",
    "payload",
    "slot",
)
_FIELDS = ", ".join(_KEYS)
# Every column of the table at version 3, when `wasp_worker.store` copies an old file in
# (version 8 added `id`, the type, the media's metadata, edits and tombstones).
V3_COLUMNS = ("slot", *_KEYS[: _KEYS.index("from_me") + 1], "sender_jid")
_INSERTED = (*_KEYS[: _KEYS.index("from_me") + 1], "message_type", "media_mime", "media_size")
# What an inbound message carries besides its body and media, stored as `payload` JSON.
PAYLOAD_KEYS = ("mentions", "location", "contacts", "poll")


def complete(fields: dict[str, Any]) -> dict[str, Any]:
    """The inbound fields with every kind key present (a backend may leave out those its
    message does not have): `message_type` (the media's type, else text), `quoted_id`,
    `mentions` [], `location`, `contacts`, `poll` (None). What `wa:message` and the
    `message.received` webhook carry."""
    return {
        **fields,
        "message_type": fields.get("message_type") or fields.get("media_type") or "text",
        "quoted_id": fields.get("quoted_id") or None,
        "mentions": list(fields.get("mentions") or []),
        **{key: fields.get(key) or None for key in ("location", "contacts", "poll")},
    }


def payload_of(fields: dict[str, Any]) -> str | None:
    """The `payload` column of a message's fields: those of `PAYLOAD_KEYS` it has (not
    empty), as JSON, or the one given ready-made (`payload`, a sent message's); None when
    it has none (a plain text or media message)."""
    if fields.get("payload"):
        return str(fields["payload"])
    found = {key: fields[key] for key in PAYLOAD_KEYS if fields.get(key)}
    return json.dumps(found, ensure_ascii=False) if found else None


def _message(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(_KEYS, row, strict=True))
    record["read"] = bool(record["read"])
    record["from_me"] = bool(record["from_me"])
    # The payload's fields show beside the others (mentions, location, contacts, poll);
    # most rows have none, and a page reads fifty of them.
    payload = record.pop("payload")
    extra = jsonio.loads(payload) if payload else {}
    record.update({key: extra.get(key) for key in PAYLOAD_KEYS})
    record["mentions"] = record["mentions"] or []
    return record


def _insert_row(
    db: sqlite3.Connection,
    slot: Slot,
    direction: Direction,
    fields: dict[str, Any],
    read: bool | None = None,
) -> bool:
    """The message's row alone (INSERT OR IGNORE), its id time-ordered
    (`wasp_worker.message_ids`); False when its WhatsApp id is already there."""
    stamp = fields.get("timestamp") or time.time()
    cursor = db.execute(
        f"INSERT OR IGNORE INTO messages (id, slot, {', '.join(_INSERTED)}, media_name, "
        f"sender_jid, quoted_id, payload) VALUES ({', '.join('?' * (len(_INSERTED) + 6))})",
        (
            next_id(db, stamp),
            str(slot),
            fields["wa_message_id"],
            fields["chat_id"],
            direction,
            fields["from"],
            fields.get("push_name"),
            fields.get("body") or "",
            fields.get("media_type"),
            fields.get("media_url"),
            stamp,
            int(direction == "out" if read is None else read or direction == "out"),
            "sent" if direction == "out" else None,
            fields.get("sender_phone_jid"),
            fields.get("sender_lid"),
            int(bool(fields.get("from_me"))),
            fields.get("message_type") or fields.get("media_type") or "text",
            fields.get("mime_type"),
            fields.get("file_size"),
            fields.get("file_name"),
            fields.get("sender_jid_raw"),
            fields.get("quoted_id") or None,
            payload_of(fields),
        ),
    )
    return cursor.rowcount > 0


def insert(
    db: sqlite3.Connection, slot: Slot, direction: Direction, fields: dict[str, Any]
) -> bool:
    """Store one message in the caller's transaction, with its change, its chat's
    conversation and (inbound) its sender's contact; False when its id is already there."""
    if not _insert_row(db, slot, direction, fields):
        return False
    log_changes(db, slot, "message", [fields["wa_message_id"]])
    conversations.refresh(db, slot, [fields["chat_id"]])
    if direction == "in":
        upsert_sender(db, slot, fields)
    return True


def upsert_sender(db: sqlite3.Connection, slot: Slot, fields: dict[str, Any]) -> None:
    """The sender of an inbound message into the slot's contacts (its raw JID when the
    backend named neither identity), in the caller's transaction."""
    phone, lid = fields.get("sender_phone_jid"), fields.get("sender_lid")
    raw = fields.get("sender_jid_raw") or ""
    if not phone and not lid:
        phone = raw if raw.endswith("@s.whatsapp.net") else None
        lid = raw if raw.endswith("@lid") else None
    contacts.upsert(db, slot, phone, lid, push_name=fields.get("push_name"))


def _media_name(media_url: str | None) -> str | None:
    """The file on the volume a stored `media_url` names (`.../media/<name>`), if any."""
    if not media_url or "/media/" not in media_url:
        return None
    name = media_url.rsplit("/", 1)[1]
    return name if _MEDIA_NAME.fullmatch(name) else None


def _work_dir(db: sqlite3.Connection) -> Path:
    """The folder of the shard's database file: the volume's WORKDIR, where media lives."""
    return Path(db.execute("PRAGMA database_list").fetchone()[2]).parent


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


def _marks(values: list[Any]) -> str:
    return ",".join("?" * len(values))


def _set_unread(db: sqlite3.Connection, slot: Slot, chat_id: str, unread: int) -> None:
    """The chat's newest `unread` inbound messages unread, the others read (the phone's
    count), logging the messages that changed."""
    changed = db.execute(
        "UPDATE messages SET read = (id NOT IN (SELECT id FROM messages WHERE slot=?1 "
        "AND chat_id=?2 AND direction='in' AND deleted_at IS NULL "
        "ORDER BY timestamp DESC, id DESC LIMIT ?3)) "
        "WHERE slot=?1 AND chat_id=?2 AND direction='in' AND read IS NOT "
        "(id NOT IN (SELECT id FROM messages WHERE slot=?1 AND chat_id=?2 AND direction='in' "
        "AND deleted_at IS NULL ORDER BY timestamp DESC, id DESC LIMIT ?3)) "
        "RETURNING wa_message_id",
        (str(slot), chat_id, max(unread, 0)),
    ).fetchall()
    log_changes(db, slot, "message", [row[0] for row in changed])


def _name_chat(db: sqlite3.Connection, slot: Slot, chat_id: str, name: str) -> None:
    """The name the phone gives a chat, in the caller's transaction: a group's subject, a
    person's saved contact name (`refresh` then shows it)."""
    if chat_id.endswith("@g.us"):
        changed = db.execute(
            "UPDATE conversations SET name=? WHERE slot=? AND chat_id=? AND name IS NOT ? "
            "RETURNING chat_id",
            (name, str(slot), chat_id, name),
        ).fetchall()
        if changed:
            conversations.log_changes(db, slot, "conversation", [chat_id])
        return
    phone = chat_id if chat_id.endswith("@s.whatsapp.net") else None
    lid = chat_id if chat_id.endswith("@lid") else None
    contacts.upsert(db, slot, phone, lid, name=name)
    conversations.refresh(db, slot, [chat_id])


def apply_edit(
    db: sqlite3.Connection,
    slot: Slot,
    chat_id: str,
    wa_message_id: str,
    body: str,
    edited_at: float,
) -> tuple[bool, bool]:
    """An edit in the caller's transaction: the body replaced (the full-text index follows
    by trigger), `edited_at` set, the change logged and a `message.edited` event. (known,
    changed): unknown when the slot has no such message in that chat, or it was deleted;
    an edit older than the one stored, or the same again, changes nothing."""
    found = db.execute(
        "SELECT id, edited_at, body, deleted_at FROM messages "
        "WHERE slot=? AND wa_message_id=? AND chat_id=?",
        (str(slot), wa_message_id, chat_id),
    ).fetchone()
    if found is None or found[3] is not None:
        return False, False
    row, stored_at, stored_body, _ = found
    if stored_at is not None and (
        edited_at < stored_at or (edited_at == stored_at and body == stored_body)
    ):
        return True, False
    db.execute("UPDATE messages SET body=?, edited_at=? WHERE id=?", (body, edited_at, row))
    log_changes(db, slot, "message", [wa_message_id])
    conversations.refresh(db, slot, [chat_id])
    data = {
        "slot": str(slot),
        "id": row,
        "chat_id": chat_id,
        "wa_message_id": wa_message_id,
        "body": body,
        "edited_at": edited_at,
    }
    outbox_tables.add(db, [Event.new("message.edited", slot, data)])
    return True, True


def apply_revoke(
    db: sqlite3.Connection, slot: Slot, chat_id: str, wa_message_id: str, deleted_at: float
) -> tuple[bool, bool, Path | None]:
    """A delete for everyone in the caller's transaction: the message stays as a tombstone
    (body '' and media fields cleared, `deleted_at` set, read: it no longer counts as
    unread), the change logged and a `message.deleted` event. (known, changed, the media
    file to remove once committed); a second revoke changes nothing."""
    found = db.execute(
        "SELECT id, media_url, deleted_at FROM messages "
        "WHERE slot=? AND wa_message_id=? AND chat_id=?",
        (str(slot), wa_message_id, chat_id),
    ).fetchone()
    if found is None:
        return False, False, None
    row, media_url, already = found
    if already is not None:
        return True, False, None
    db.execute(
        "UPDATE messages SET body='', media_type=NULL, media_url=NULL, "
        "media_mime=NULL, media_size=NULL, media_name=NULL, deleted_at=?, read=1 "
        "WHERE id=?",
        (deleted_at, row),
    )
    log_changes(db, slot, "message", [wa_message_id])
    conversations.refresh(db, slot, [chat_id])
    data = {
        "slot": str(slot),
        "id": row,
        "chat_id": chat_id,
        "wa_message_id": wa_message_id,
        "deleted_at": deleted_at,
    }
    outbox_tables.add(db, [Event.new("message.deleted", slot, data)])
    name = _media_name(media_url)
    return True, True, media.media_dir(_work_dir(db), slot) / name if name else None


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

    async def edit(
        self, slot: Slot, chat_id: str, wa_message_id: str, body: str, edited_at: float
    ) -> bool:
        """WhatsApp says the message was edited (`apply_edit`, in one transaction). False
        when the slot has no such message in that chat, or it was deleted."""

        def write(db: sqlite3.Connection) -> tuple[bool, bool]:
            with transaction(db):
                return apply_edit(db, slot, chat_id, wa_message_id, body, edited_at)

        known, changed = await self._store.call(write)
        if changed:
            self._outbox.added()
        return known

    async def revoke(self, slot: Slot, chat_id: str, wa_message_id: str, deleted_at: float) -> bool:
        """WhatsApp says the message was deleted for everyone (`apply_revoke`, in one
        transaction); then its media file on the volume is removed here (callers need not).
        False when the slot has no such message in that chat."""

        def write(db: sqlite3.Connection) -> tuple[bool, bool, Path | None]:
            with transaction(db):
                return apply_revoke(db, slot, chat_id, wa_message_id, deleted_at)

        known, changed, media_path = await self._store.call(write)
        if changed:
            self._outbox.added()
        if media_path is not None:  # after the commit: a rollback must not lose the file
            await asyncio.to_thread(media_path.unlink, missing_ok=True)
        return known

    async def import_history(
        self, slot: Slot, messages: list[dict[str, Any]], chats: list[dict[str, Any]]
    ) -> int:
        """WhatsApp's history sync after a login, in one transaction: `messages` in the
        inbound fields' shape (plus an optional `read`), each stored once (a message seen
        live and again here is one row), changes logged, conversations refreshed, senders
        into contacts, and NO `message.received` event (history is not news: a receiver
        would get months of messages at once). `chats`: `{chat_id, name, pinned, archived,
        muted_until, unread}` from the phone, each None when not given, applied to chats
        that have messages (a conversation exists once it has one); `unread` N leaves the
        chat's newest N inbound messages unread and the others read. How many messages
        were new."""

        def write(db: sqlite3.Connection) -> int:
            with transaction(db):
                new: list[str] = []
                touched: list[str] = []
                for fields in messages:
                    direction: Direction = "out" if fields.get("from_me") else "in"
                    read = fields.get("read")
                    if _insert_row(db, slot, direction, fields, None if read is None else read):
                        new.append(fields["wa_message_id"])
                        touched.append(fields["chat_id"])
                        if direction == "in":
                            upsert_sender(db, slot, fields)
                log_changes(db, slot, "message", new)
                for chat in chats:
                    if chat.get("unread") is not None:
                        _set_unread(db, slot, chat["chat_id"], int(chat["unread"]))
                conversations.refresh(db, slot, [*touched, *(c["chat_id"] for c in chats)])
                for chat in chats:
                    if chat.get("name"):
                        _name_chat(db, slot, chat["chat_id"], chat["name"])
                    settings = {
                        key: chat[key]
                        for key in ("pinned", "archived", "muted_until")
                        if chat.get(key) is not None
                    }
                    conversations.set_remote(db, slot, chat["chat_id"], settings)
                return len(new)

        return await self._store.call(write)

    async def mark_read(
        self, slot: Slot, chat_id: str, message_ids: list[str] | None
    ) -> tuple[int, dict[str | None, list[str]]]:
        """Mark these inbound messages of the chat read (None: all of them), with their
        changes and the conversation's unread count, in one transaction: how many were
        unread, and those by sender JID (a read receipt names the sender in groups)."""
        only = "" if message_ids is None else f" AND wa_message_id IN ({_marks(message_ids)})"

        def write(db: sqlite3.Connection) -> tuple[int, dict[str | None, list[str]]]:
            with transaction(db):
                marked = db.execute(
                    "UPDATE messages SET read=1 WHERE slot=? AND chat_id=? AND direction='in' "
                    f"AND read=0{only} RETURNING wa_message_id, sender_jid, timestamp",
                    (str(slot), chat_id, *(message_ids or ())),
                ).fetchall()
                unread: dict[str | None, list[str]] = {}
                for message_id, sender, _ in sorted(marked, key=lambda m: m[2]):
                    unread.setdefault(sender, []).append(message_id)
                log_changes(db, slot, "message", [m[0] for m in marked])
                conversations.refresh(db, slot, [chat_id])
            return len(marked), unread

        return await self._store.call(write)

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
                        "last_message": decorate(db, [_message(last)])[0],
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
                marked = db.execute(MARK_CHAT_READ, (str(slot), chat_id)).fetchall()
                log_changes(db, slot, "message", [m[0] for m in marked])
                conversations.refresh(db, slot, [chat_id])
            return decorate(db, [_message(r) for r in reversed(rows)]), unread

        return await self._store.call(read)

    async def sync(self, slot: Slot, since: int, limit: int, walk: bool) -> dict[str, Any]:
        """The slot's messages and conversations changed after seq `since`: the next
        `limit` changes at most, each at its current state, once per page. `has_more` says
        changes follow; `next` is the page's last seq (`since` when nothing changed), or,
        when none follow, the log's last one (past the carried rows an incremental page
        skipped, so its cursor keeps up with the horizon).

        A walk (`walk`, a client syncing from the start) reads every row, the ones
        compaction carried forward too, and its `next` stays a walk (`N.w`) until it has
        caught up (`has_more` false); from then on it is an incremental client, whose pages
        skip the carried rows. `since` 0 is the start; a `since` below the slot's horizon
        (`wasp_worker.compaction`) raises `Gone`: rows after it may have been compacted away.

        Why an incremental client may skip carried rows: a plain cursor is given only to a
        client that has read every row up to it (a walk turns plain once caught up). A
        carried row is a copy of an item's latest change, not a change, and its original is
        at or below the horizon H of its pass; H only grows, and a valid `since` is at least
        H, so the client has that state, unchanged since (else it would not have been
        carried). Every change after `since` is an uncarried row after it, and compaction
        deletes rows only at or below H: skipping the copies skips no change."""
        # The literal `carried = 0`, not a parameter: SQLite picks the partial index
        # `changes_incremental` only when the query's WHERE implies its own.
        only = "" if walk else " AND carried = 0"

        def read(db: sqlite3.Connection) -> dict[str, Any]:
            # One read transaction: no write lands between these statements, and the horizon
            # read is the one the rows read agree with (compaction moves it as it deletes).
            recorded = db.execute("SELECT seq FROM sync_horizon WHERE slot=?", (str(slot),))
            horizon = (recorded.fetchone() or (0,))[0]
            if 0 < since < horizon:
                raise Gone(
                    f"sync cursor {since}{SYNC_WALK if walk else ''} is older than the change "
                    f"log's horizon {horizon}: "
                    "start again without since"
                )
            changes = db.execute(
                f"SELECT seq, kind, key FROM changes WHERE slot=? AND seq>?{only} "
                "ORDER BY seq LIMIT ?",
                (str(slot), since, limit),
            ).fetchall()
            following = changes[-1][0] if changes else since
            more = db.execute(
                f"SELECT 1 FROM changes WHERE slot=? AND seq>?{only} LIMIT 1",
                (str(slot), following),
            ).fetchone()
            if more is None:
                last = db.execute("SELECT max(seq) FROM changes WHERE slot=?", (str(slot),))
                following = max(following, (last.fetchone() or (0,))[0] or 0)
            keys: dict[str, dict[str, None]] = {"message": {}, "conversation": {}}
            for _, kind, key in changes:
                keys[kind][key] = None
            ids = list(keys["message"])
            marks = ",".join("?" * len(ids))
            found = {
                item["wa_message_id"]: item
                for item in decorate(
                    db,
                    [
                        _message(row)
                        for row in db.execute(
                            f"SELECT {_FIELDS} FROM messages WHERE slot=? "
                            f"AND wa_message_id IN ({marks})",
                            (str(slot), *ids),
                        )
                    ],
                )
            }
            chats = conversations.conversations_named(db, slot, list(keys["conversation"]))
            named = {chat["chat_id"] for chat in chats}
            return {
                "messages": [found[i] for i in ids if i in found],
                "conversations": chats,
                # Changed, then gone (retention deletes rows): the client drops its copy.
                "deleted": {
                    "messages": [i for i in ids if i not in found],
                    "conversations": [c for c in keys["conversation"] if c not in named],
                },
                # A walk's cursor says so until it has caught up: then it is incremental.
                "next": f"{following}.w" if walk and more is not None else str(following),
                "has_more": more is not None,
            }

        return await self._store.read(read)
