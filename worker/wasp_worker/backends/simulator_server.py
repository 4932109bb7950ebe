"""The simulated WhatsApp server: its accounts' numbers and the ledger every simulator
worker on the machine shares through a file (SIMULATOR_SERVER_DIR).

Every simulated slot has a phone number (`phone_of`) and a LID (`lid_of`). The
ledger (`ServerLedger`) is the server's record of sessions, the message ids it
accepted, its mailbox, and what the accounts' phones keep: each account's copy
of its messages and its chats' settings. `wasp_worker.backends.simulator` is the
backend that talks to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from typing import Any

from wasp.slots import Slot, SlotError
from wasp_worker.backends.base import ChatSettingsChange, Outgoing
from wasp_worker.backends.shared_file import SharedFile

PHONE_PREFIX = "555"
LID_PREFIX = "19"


def phone_of(slot: Slot) -> str:
    """The simulated phone number of a slot: 555, two digits per prefix letter, 9 digits."""
    letters = "".join(f"{ord(c) - 64:02d}" for c in slot.prefix)
    return f"{PHONE_PREFIX}{len(slot.prefix)}{letters}{slot.number:09d}"


def lid_of(slot: Slot) -> str:
    """The simulated LID of a slot (WhatsApp's privacy id, unrelated-looking to the phone)."""
    return f"{LID_PREFIX}{phone_of(slot)[::-1]}@lid"


def slot_of_lid(lid: str) -> Slot | None:
    user, _, server = lid.partition("@")
    if server != "lid" or not user.startswith(LID_PREFIX):
        return None
    return slot_of(user[len(LID_PREFIX) :][::-1])


def slot_of(phone: str) -> Slot | None:
    if not phone.startswith(PHONE_PREFIX) or len(phone) < 4:
        return None
    size = int(phone[3])
    letters, number = phone[4 : 4 + 2 * size], phone[4 + 2 * size :]
    try:
        prefix = "".join(chr(int(letters[i : i + 2]) + 64) for i in range(0, len(letters), 2))
        return Slot(prefix, int(number))
    except (ValueError, SlotError):
        return None


MEDIA_KINDS = frozenset({"image", "video", "audio", "document", "voice", "sticker"})


def inbound_fields(to: Slot, sender: Slot, message: Outgoing) -> dict[str, Any]:
    """The message as the recipient's session reports it (the inbound event's fields): its
    type, the message it quotes, whom it mentions and its location, contact cards or poll,
    as the sender's queue row details them."""
    phone = phone_of(sender)
    details = message.details
    media = message.kind in MEDIA_KINDS
    return {
        "slot": str(to),
        "from": phone,
        "to": phone_of(to),
        "body": message.body,
        "chat_id": f"{phone}@s.whatsapp.net",
        "chat_type": "direct",
        "sender_jid_raw": f"{phone}@s.whatsapp.net",
        "push_name": None,
        "wa_message_id": message.wa_message_id,
        "timestamp": int(time.time()),
        "media_type": message.kind if media else None,
        "media_url": None,
        "mime_type": details.get("mime") if media else None,
        "file_name": message.file_name if media else None,
        "file_size": details.get("file_size") if media else None,
        "from_me": False,
        "sender_lid": lid_of(sender),
        "sender_phone_jid": f"{phone}@s.whatsapp.net",
        "message_type": message.kind,
        "quoted_id": details.get("reply_to"),
        "mentions": list(details.get("mentions", [])),
        "location": details.get("location"),
        "contacts": details.get("contacts"),
        "poll": details.get("poll"),
    }


def sent_fields(sender: Slot, recipient: Slot, message: Outgoing) -> dict[str, Any]:
    """The sender's own copy of a message it sent, as its phone keeps it (from_me)."""
    fields = inbound_fields(sender, sender, message)
    chat = jid_of(recipient)
    fields.update(to=chat, chat_id=chat, from_me=True, sender_lid=None)
    return fields


# The key of a message's file (base64) on its way through the mailbox to the recipient.
MEDIA_BYTES = "media_base64"
HISTORY_SYNC_LIMIT = 1000  # the newest messages a newly linked device gets
CHANGE_KINDS = ("message", "edit", "revoke", "chat_settings", "reaction", "vote")
# The mailbox kind an action sent from a worker reaches the other devices as.
ACTION_MAILBOX = {"reaction": "reaction", "edit": "edit", "delete": "revoke", "vote": "vote"}


def action_notice(
    kind: str, device: Slot, chat_id: str, sender: Slot, details: dict[str, Any], at: float
) -> dict[str, Any]:
    """An action as the mailbox hands it to `device` (which names the chat `chat_id`)."""
    notice: dict[str, Any] = {"slot": str(device), "chat_id": chat_id, "at": at}
    target = details["target"]
    if kind == "reaction":
        notice.update(wa_message_id=target, reactor=jid_of(sender), emoji=details["emoji"])
    elif kind == "vote":
        notice.update(poll_id=target, voter=jid_of(sender), options=details["options"])
    else:  # edit, or delete (revoke): the shape of the phone's own changes
        notice.update(wa_message_id=target, body=details.get("text"))
    return notice


def jid_of(slot: Slot) -> str:
    return f"{phone_of(slot)}@s.whatsapp.net"


class ServerLedger(SharedFile):
    """The simulated WhatsApp server, shared through a file by every worker on the
    machine (SIMULATOR_SERVER_DIR): its record of sessions, the message ids it accepted,
    and its mailbox.

    Sessions: (slot, owner, open|close, CLOCK_MONOTONIC in ns). CLOCK_MONOTONIC is
    one clock for all processes on Linux, so rows of different workers compare; an
    `open` is written before the session starts and a `close` after it stopped, so
    the intervals cover the real ones.

    Accepted: one row per message id, with how many times it was sent; a repeat is
    not delivered again. Tests count sends and deliveries here.

    Mailbox: a message or receipt for an account that no session of the sending worker
    holds waits here until the worker holding that account takes it, as WhatsApp's
    server keeps it for a device that is elsewhere or offline. One taker per item.
    """

    FILE = "simulator-server.sqlite3"

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS sessions (slot TEXT, owner TEXT, event TEXT, "
        "monotonic_ns INTEGER, pid INTEGER);"
        "CREATE TABLE IF NOT EXISTS accepted (wa_message_id TEXT PRIMARY KEY, "
        "from_slot TEXT, destination TEXT, at REAL, sends INTEGER DEFAULT 1);"
        "CREATE TABLE IF NOT EXISTS mailbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "kind TEXT NOT NULL DEFAULT 'message', recipient TEXT NOT NULL, "
        "fields TEXT NOT NULL, taken INTEGER DEFAULT 0);"
        # Each account's copy of its messages, as its phone keeps them.
        "CREATE TABLE IF NOT EXISTS copies (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "account TEXT NOT NULL, wa_message_id TEXT NOT NULL, fields TEXT NOT NULL, "
        "UNIQUE (account, wa_message_id));"
        "CREATE TABLE IF NOT EXISTS chat_settings (account TEXT NOT NULL, "
        "chat_id TEXT NOT NULL, pinned INTEGER NOT NULL DEFAULT 0, "
        "archived INTEGER NOT NULL DEFAULT 0, muted_until REAL, "
        "PRIMARY KEY (account, chat_id));"
        # When each chat setting last changed: of two changes the later stands.
        "CREATE TABLE IF NOT EXISTS chat_settings_times (account TEXT NOT NULL, "
        "chat_id TEXT NOT NULL, field TEXT NOT NULL, at REAL NOT NULL, "
        "PRIMARY KEY (account, chat_id, field));"
        # Whose presence each account's current connection asked for.
        "CREATE TABLE IF NOT EXISTS presence_subscriptions (subscriber TEXT NOT NULL, "
        "target TEXT NOT NULL, PRIMARY KEY (subscriber, target));"
    )

    def record(self, slot: Slot, owner: str, event: str) -> None:
        at = time.monotonic_ns()
        with self._lock:
            db = self._open()
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (str(slot), owner, event, at, os.getpid()),
            )
            # A connection's presence subscriptions end with it, as WhatsApp's do.
            db.execute("DELETE FROM presence_subscriptions WHERE subscriber=?", (str(slot),))

    def subscribe_presence(self, subscriber: Slot, target: Slot) -> None:
        """`subscriber`'s connection asks for `target`'s presence."""
        with self._lock:
            self._open().execute(
                "INSERT OR IGNORE INTO presence_subscriptions VALUES (?, ?)",
                (str(subscriber), str(target)),
            )

    def post_presence(self, sender: Slot, recipient: Slot, state: str) -> bool:
        """`sender` shows `state` in its chat with `recipient`: put in the recipient's mailbox
        only when its connection subscribed to the sender's presence (else WhatsApp sends
        nothing). Whether it was posted."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                wanted = db.execute(
                    "SELECT 1 FROM presence_subscriptions WHERE subscriber=? AND target=?",
                    (str(recipient), str(sender)),
                ).fetchone()
                if wanted:
                    notice = {
                        "slot": str(recipient),
                        "chat_id": jid_of(sender),
                        "sender": jid_of(sender),
                        "state": state,
                        "at": time.time(),
                    }
                    self._post(db, recipient, notice, "presence")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return wanted is not None

    def accept(
        self, sender: Slot, message: Outgoing, recipient: Slot, fields: dict[str, Any]
    ) -> bool:
        """Take a sent message: counted, and (the first time its id is seen) put in the
        recipient's mailbox in the same transaction, so nothing accepted can vanish.
        False if the server had this id already (a repeated send)."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO accepted (wa_message_id, from_slot, destination, at) "
                    "VALUES (?, ?, ?, ?)",
                    (message.wa_message_id, str(sender), message.destination, time.time()),
                ).rowcount
                if inserted:
                    self._post(db, recipient, fields, "message")
                    # The phones' copies keep no bytes: the device that receives saves them.
                    kept = {k: v for k, v in fields.items() if k != MEDIA_BYTES}
                    self._keep(db, recipient, kept)
                    self._keep(db, sender, sent_fields(sender, recipient, message))
                else:
                    db.execute(
                        "UPDATE accepted SET sends = sends + 1 WHERE wa_message_id=?",
                        (message.wa_message_id,),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return bool(inserted)

    def counts(self) -> tuple[int, int]:
        """(distinct messages accepted, repeated sends deduplicated)."""
        with self._lock:
            distinct, sends = (
                self._open()
                .execute("SELECT count(*), coalesce(sum(sends), 0) FROM accepted")
                .fetchone()
            )
            return int(distinct), int(sends) - int(distinct)

    @staticmethod
    def _post(db: sqlite3.Connection, recipient: Slot, fields: dict[str, Any], kind: str) -> None:
        db.execute(
            "INSERT INTO mailbox (kind, recipient, fields) VALUES (?, ?, ?)",
            (kind, str(recipient), json.dumps(fields)),
        )

    @staticmethod
    def _keep(db: sqlite3.Connection, account: Slot, fields: dict[str, Any]) -> None:
        db.execute(
            "INSERT OR IGNORE INTO copies (account, wa_message_id, fields) VALUES (?, ?, ?)",
            (str(account), fields["wa_message_id"], json.dumps({**fields, "read": False})),
        )

    def post(self, recipient: Slot, fields: dict[str, Any], kind: str) -> None:
        with self._lock:
            self._post(self._open(), recipient, fields, kind)

    def waiting(
        self, recipients: list[Slot], kinds: tuple[str, ...]
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """The items of these kinds waiting for these accounts, oldest first, by number."""
        if not recipients:
            return []
        marks = ",".join("?" * len(recipients))
        with self._lock:
            rows = (
                self._open()
                .execute(
                    f"SELECT seq, kind, fields FROM mailbox WHERE taken=0 "
                    f"AND kind IN ({','.join('?' * len(kinds))}) "
                    f"AND recipient IN ({marks}) ORDER BY seq LIMIT 500",
                    [*kinds, *(str(r) for r in recipients)],
                )
                .fetchall()
            )
        return [(int(seq), kind, json.loads(fields)) for seq, kind, fields in rows]

    def change(self, sender: Slot, message_id: str, kind: str, body: str | None) -> bool:
        """The sender's phone edits (`body`) or deletes for everyone (`body` None) a message
        it sent: every copy follows (a deleted one is gone, as WhatsApp keeps only a stub),
        and both accounts' linked devices are told through the mailbox, in order after the
        message itself. False when the server has no such message from this sender."""
        at = int(time.time())
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                found = db.execute(
                    "SELECT destination FROM accepted WHERE wa_message_id=? AND from_slot=?",
                    (message_id, str(sender)),
                ).fetchone()
                recipient = slot_of(str(found[0]).partition("@")[0]) if found else None
                if recipient is not None:
                    self._change_copies(db, message_id, body)
                    # Each side names the chat by the other account.
                    for device, peer in ((recipient, sender), (sender, recipient)):
                        notice = {
                            "slot": str(device),
                            "chat_id": jid_of(peer),
                            "wa_message_id": message_id,
                            "body": body,
                            "at": at,
                        }
                        self._post(db, device, notice, kind)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return recipient is not None

    def deliver_action(
        self,
        sender: Slot,
        action_id: str,
        kind: str,
        details: dict[str, Any],
        recipients: list[tuple[Slot, str]],
    ) -> bool:
        """Take an action a worker sent (reaction, edit, delete, vote on `details["target"]`):
        counted like a message by its own id (a repeated send is not delivered again), the
        phones' copies follow an edit or delete, and each recipient device (with the chat
        as it names it) gets it through the mailbox, in order after the messages before it,
        in one transaction. Not the sender's own device: its worker applied it already."""
        at = time.time()
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO accepted (wa_message_id, from_slot, destination, at) "
                    "VALUES (?, ?, ?, ?)",
                    (action_id, str(sender), kind, at),
                ).rowcount
                if inserted:
                    if kind in ("edit", "delete"):
                        text = details.get("text") if kind == "edit" else None
                        self._change_copies(db, details["target"], text)
                    for device, chat in recipients:
                        notice = action_notice(kind, device, chat, sender, details, at)
                        self._post(db, device, notice, ACTION_MAILBOX[kind])
                else:
                    db.execute(
                        "UPDATE accepted SET sends = sends + 1 WHERE wa_message_id=?", (action_id,)
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return bool(inserted)

    @staticmethod
    def _change_copies(db: sqlite3.Connection, message_id: str, body: str | None) -> None:
        if body is None:
            db.execute("DELETE FROM copies WHERE wa_message_id=?", (message_id,))
            return
        for seq, fields in db.execute(
            "SELECT seq, fields FROM copies WHERE wa_message_id=?", (message_id,)
        ).fetchall():
            db.execute(
                "UPDATE copies SET fields=? WHERE seq=?",
                (json.dumps({**json.loads(fields), "body": body}), seq),
            )

    def read_copies(self, account: Slot, message_ids: list[str]) -> None:
        """The account read these messages (its phone's copies say so)."""
        with self._lock:
            db = self._open()
            for message_id in message_ids:
                found = db.execute(
                    "SELECT seq, fields FROM copies WHERE account=? AND wa_message_id=?",
                    (str(account), message_id),
                ).fetchone()
                if found is not None:
                    db.execute(
                        "UPDATE copies SET fields=? WHERE seq=?",
                        (json.dumps({**json.loads(found[1]), "read": True}), found[0]),
                    )

    def set_chat_settings(self, account: Slot, chat_id: str, change: ChatSettingsChange) -> None:
        """The account's chat settings as its phone keeps them (what a worker sent)."""
        with self._lock:
            self._set(self._open(), account, chat_id, change)

    @staticmethod
    def _set(
        db: sqlite3.Connection, account: Slot, chat_id: str, change: ChatSettingsChange
    ) -> None:
        """Each field the change sets, unless the field's last change is later (by `at`:
        when it was set; now when unknown)."""
        at = change.at if change.at is not None else time.time()
        db.execute(
            "INSERT OR IGNORE INTO chat_settings (account, chat_id) VALUES (?, ?)",
            (str(account), chat_id),
        )
        given: dict[str, Any] = {}
        if change.pinned is not None:
            given["pinned"] = int(change.pinned)
        if change.archived is not None:
            given["archived"] = int(change.archived)
        if change.mute:
            given["muted_until"] = change.muted_until
        for name, value in given.items():
            later = db.execute(
                "SELECT 1 FROM chat_settings_times WHERE account=? AND chat_id=? AND field=? "
                "AND at > ?",
                (str(account), chat_id, name, at),
            ).fetchone()
            if later:
                continue
            db.execute(
                f"UPDATE chat_settings SET {name}=? WHERE account=? AND chat_id=?",
                (value, str(account), chat_id),
            )
            db.execute(
                "INSERT OR REPLACE INTO chat_settings_times (account, chat_id, field, at) "
                "VALUES (?, ?, ?, ?)",
                (str(account), chat_id, name, at),
            )

    def phone_sets(self, account: Slot, chat_id: str, change: ChatSettingsChange) -> None:
        """The account's phone changes a chat's settings: kept, and the device of the worker
        holding the account is told through the mailbox."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                if change.at is None:  # the phone's clock: now
                    change = dataclasses.replace(change, at=time.time())
                self._set(db, account, chat_id, change)
                notice = {
                    "slot": str(account),
                    "chat_id": chat_id,
                    "pinned": change.pinned,
                    "archived": change.archived,
                    "mute": change.mute,
                    "muted_until": change.muted_until,
                    "at": change.at,
                }
                self._post(db, account, notice, "chat_settings")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def chat_settings(self, account: Slot) -> dict[str, dict[str, Any]]:
        """The account's chats' settings, by chat id, as its phone shows them."""
        with self._lock:
            rows = (
                self._open()
                .execute(
                    "SELECT chat_id, pinned, archived, muted_until FROM chat_settings "
                    "WHERE account=?",
                    (str(account),),
                )
                .fetchall()
            )
        return {
            chat: {"pinned": bool(pinned), "archived": bool(archived), "muted_until": muted}
            for chat, pinned, archived, muted in rows
        }

    def copies(self, account: Slot, limit: int = HISTORY_SYNC_LIMIT) -> list[dict[str, Any]]:
        """The account's newest messages as its phone keeps them, oldest first."""
        with self._lock:
            rows = (
                self._open()
                .execute(
                    "SELECT fields FROM copies WHERE account=? ORDER BY seq DESC LIMIT ?",
                    (str(account), limit),
                )
                .fetchall()
            )
        return [json.loads(fields) for (fields,) in reversed(rows)]

    def ack(
        self, seq: int, receipt_to: Slot | None = None, receipt: dict[str, Any] | None = None
    ) -> bool:
        """The device has the item: it leaves the mailbox and, for a message, its sender's
        `delivered` receipt is posted in the same transaction (once per message, however
        often a device that crashed before its ack is handed the message again)."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                taken = db.execute(
                    "UPDATE mailbox SET taken=1 WHERE seq=? AND taken=0", (seq,)
                ).rowcount
                if taken and receipt_to is not None and receipt is not None:
                    self._post(db, receipt_to, receipt, "receipt")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return bool(taken)
