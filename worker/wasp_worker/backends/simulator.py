"""The simulator backend: deterministic, in-process sessions for tests, demos and load.

Not WhatsApp. A started slot shows a QR code that rotates every
`qr_interval_s`; `scan(slot)` logs it in, as a phone scanning the code would.
A slot that logged in once resumes without a QR, as a stored session does.

Every simulated slot has a phone number (`phone_of`). A message sent to one
is accepted by the simulated server once per message id (a repeated send is
deduplicated, as WhatsApp does) and arrives as inbound at the recipient: at
once if this worker holds the recipient's connected session, else through the
server's mailbox, which the worker holding it (another shard, or this one once
the session connects) takes from. When it arrives, the sender gets a
`delivered` receipt; when the recipient marks it read (`mark_read`), a `read`
one. Receipts travel through the server too, so they cross shards and wait
for a sender that is offline.

The simulator keeps the server's side in a file every worker on the machine
shares (`ServerLedger`, SIMULATOR_SERVER_DIR): accepted message ids, the
mailbox of messages and receipts, and every session opening and closing by
owner, since WhatsApp notices an account connected from two places at once.

It also keeps what WhatsApp's phones keep: each account's copy of the messages
it sent and received, and its chats' settings (pin, archive, mute). A sender may
edit or delete for everyone a message it sent (`edit`, `revoke`: the peer's
device gets the change through the mailbox, in order with its messages); a
newly linked device (`scan`) gets the account's history as a history sync;
settings sent from a worker (`send_chat_settings`) reach the account's "phone"
(the server's record), and a change made on the phone (`ServerLedger.phone_sets`)
reaches the worker holding the account.

Groups, the directory of numbers on WhatsApp and block lists are `sim_groups`'
(`SimulatorGroups`, mixed in); a blocked sender's messages are never delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasp.slots import Slot, SlotError
from wasp_worker.backends.base import (
    ChatSettingsChange,
    HistoryImport,
    MessageEdit,
    MessageRevoke,
    OnInbound,
    OnReceipt,
    OnRemote,
    OnStatus,
    Outgoing,
    PairFailed,
    ReceiptEvent,
    ReceiptState,
    RemoteChatSettings,
    SendFailed,
    StatusEvent,
)
from wasp_worker.backends.sim_groups import SimulatorGroups
from wasp_worker.qr import qr_data_url

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


def inbound_fields(to: Slot, sender: Slot, message: Outgoing) -> dict[str, Any]:
    """The message as the recipient's session reports it (the inbound event's fields)."""
    phone = phone_of(sender)
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
        "media_type": None,
        "media_url": None,
        "mime_type": None,
        "file_name": None,
        "file_size": None,
        "from_me": False,
        "sender_lid": lid_of(sender),
        "sender_phone_jid": f"{phone}@s.whatsapp.net",
    }


def sent_fields(sender: Slot, recipient: Slot, message: Outgoing) -> dict[str, Any]:
    """The sender's own copy of a message it sent, as its phone keeps it (from_me)."""
    fields = inbound_fields(sender, sender, message)
    chat = jid_of(recipient)
    fields.update(to=chat, chat_id=chat, from_me=True, sender_lid=None)
    return fields


HISTORY_SYNC_LIMIT = 1000  # the newest messages a newly linked device gets
CHANGE_KINDS = ("message", "edit", "revoke", "chat_settings")


def jid_of(slot: Slot) -> str:
    return f"{phone_of(slot)}@s.whatsapp.net"


def _remote(kind: str, fields: dict[str, Any]) -> MessageEdit | MessageRevoke | RemoteChatSettings:
    """A change the server keeps in the mailbox, as the backend reports it."""
    slot, chat = Slot.parse(fields["slot"]), fields["chat_id"]
    if kind == "edit":
        return MessageEdit(slot, chat, fields["wa_message_id"], fields["body"], fields["at"])
    if kind == "revoke":
        return MessageRevoke(slot, chat, fields["wa_message_id"], fields["at"])
    change = ChatSettingsChange(
        fields["pinned"], fields["archived"], fields["mute"], fields["muted_until"]
    )
    return RemoteChatSettings(slot, chat, change)


def _receipt(to: Slot, chat_id: str, ids: list[str], state: ReceiptState) -> dict[str, Any]:
    """A receipt on its way to `to`, the account that sent the messages."""
    return {
        "slot": str(to),
        "chat_id": chat_id,
        "message_ids": ids,
        "state": state,
        "timestamp": int(time.time()),
    }


class ServerLedger:
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

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(
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
            )
        return self._db

    def record(self, slot: Slot, owner: str, event: str) -> None:
        at = time.monotonic_ns()
        with self._lock:
            self._open().execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (str(slot), owner, event, at, os.getpid()),
            )

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
                    self._keep(db, recipient, fields)
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
        """The sender edits (`body`) or deletes for everyone (`body` None) a message it sent:
        every copy follows (a deleted one is gone, as WhatsApp keeps only a stub), and the
        recipient's device is told through the mailbox, in order after the message itself.
        False when the server has no such message from this sender."""
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
                    notice = {
                        "slot": str(recipient),
                        "chat_id": jid_of(sender),  # the chat, as the recipient sees it
                        "wa_message_id": message_id,
                        "body": body,
                        "at": at,
                    }
                    self._post(db, recipient, notice, kind)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return recipient is not None

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
        db.execute(
            "INSERT OR IGNORE INTO chat_settings (account, chat_id) VALUES (?, ?)",
            (str(account), chat_id),
        )
        if change.pinned is not None:
            db.execute(
                "UPDATE chat_settings SET pinned=? WHERE account=? AND chat_id=?",
                (int(change.pinned), str(account), chat_id),
            )
        if change.archived is not None:
            db.execute(
                "UPDATE chat_settings SET archived=? WHERE account=? AND chat_id=?",
                (int(change.archived), str(account), chat_id),
            )
        if change.mute:
            db.execute(
                "UPDATE chat_settings SET muted_until=? WHERE account=? AND chat_id=?",
                (change.muted_until, str(account), chat_id),
            )

    def phone_sets(self, account: Slot, chat_id: str, change: ChatSettingsChange) -> None:
        """The account's phone changes a chat's settings: kept, and the device of the worker
        holding the account is told through the mailbox."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._set(db, account, chat_id, change)
                notice = {
                    "slot": str(account),
                    "chat_id": chat_id,
                    "pinned": change.pinned,
                    "archived": change.archived,
                    "mute": change.mute,
                    "muted_until": change.muted_until,
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

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


@dataclass
class _Session:
    on_status: OnStatus
    rotation: int = 0
    rotor: asyncio.Task[None] | None = None
    connected: bool = False


@dataclass
class SimulatorBackend(SimulatorGroups):
    """Sessions whose "auth state" is a small JSON file under `work_dir/auth/<slot>/`."""

    work_dir: Path
    qr_interval_s: float = 20.0
    on_inbound: OnInbound | None = None
    on_receipt: OnReceipt | None = None
    on_remote: OnRemote | None = None
    owner: str = "simulator"
    server_dir: Path | None = None  # the server ledger's; work_dir when unset
    mailbox_poll_s: float = 0.2
    sessions: dict[Slot, _Session] = field(default_factory=dict)
    server: ServerLedger = field(init=False)
    _handing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one hand-over at a time
    _collector: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.server = ServerLedger(self.server_dir or self.work_dir)

    def ledger(self) -> tuple[int, int]:
        """(distinct messages the server accepted, repeated sends deduplicated)."""
        return self.server.counts()

    async def send(self, slot: Slot, message: Outgoing) -> None:
        session = self.sessions.get(slot)
        if session is None or not session.connected:
            raise SendFailed("not_connected")
        user, _, server = message.destination.partition("@")
        recipient = slot_of(user) if server == "s.whatsapp.net" else None
        if recipient is None:
            raise SendFailed("not_a_simulated_account")
        # Groups and contacts: a recipient that blocked the sender never gets its messages
        # (the sender sees it sent, never delivered).
        if await self.blocked_by(recipient, slot):
            return
        fields = inbound_fields(recipient, slot, message)
        fresh = await asyncio.to_thread(self.server.accept, slot, message, recipient, fields)
        held = self.sessions.get(recipient)
        if fresh and held is not None and held.connected:
            await self._hand_over([recipient])  # ours: no need to wait for the next poll

    async def _hand_over(self, recipients: list[Slot]) -> None:
        """Hand what waits on the server for these accounts to their devices (this worker),
        acknowledging each item only once it was handled: a crash in between hands it over
        again, as WhatsApp does until a device acknowledges. One at a time, so the poll and
        a send's fast path never hand the same item over twice."""
        async with self._handing:
            await self._hand_over_now(recipients)

    async def _hand_over_now(self, recipients: list[Slot]) -> None:
        # Messages and the changes to them in one ordered stream: an edit never overtakes
        # the message it edits.
        waiting = await asyncio.to_thread(self.server.waiting, recipients, CHANGE_KINDS)
        for seq, kind, fields in waiting:
            if kind == "message":
                if self.on_inbound is None:
                    break
                await self.on_inbound(fields)
                sender = slot_of(str(fields["from"]))
                chat = jid_of(Slot.parse(fields["slot"]))  # the chat, as the sender sees it
                ids = [fields["wa_message_id"]]
                receipt = _receipt(sender, chat, ids, "delivered") if sender else None
                await asyncio.to_thread(self.server.ack, seq, sender, receipt)
                continue
            if self.on_remote is None:
                break
            await self.on_remote(_remote(kind, fields))
            await asyncio.to_thread(self.server.ack, seq)
        if self.on_receipt is not None:
            for seq, _, receipt in await asyncio.to_thread(
                self.server.waiting, recipients, ("receipt",)
            ):
                await self.on_receipt(
                    ReceiptEvent(
                        slot=Slot.parse(receipt["slot"]),
                        chat_id=receipt["chat_id"],
                        message_ids=tuple(receipt["message_ids"]),
                        state=receipt["state"],
                        timestamp=receipt["timestamp"],
                    )
                )
                await asyncio.to_thread(self.server.ack, seq)

    async def phone_for_lid(self, slot: Slot, lid: str) -> str | None:
        """The server's directory: every simulated account's LID is known to it."""
        if slot not in self.sessions:
            raise RuntimeError("no session")
        found = slot_of_lid(lid)
        return jid_of(found) if found is not None else None

    async def mark_read(
        self, slot: Slot, chat_id: str, sender: str | None, message_ids: list[str]
    ) -> None:
        """The recipient read these messages: a `read` receipt goes to whoever sent them."""
        session = self.sessions.get(slot)
        if session is None or not session.connected:
            raise RuntimeError("not_connected")
        user = (sender or chat_id).partition("@")[0]
        peer = slot_of(user)
        if peer is None or not message_ids:
            return  # nobody simulated to tell
        receipt = _receipt(peer, jid_of(slot), message_ids, "read")
        await asyncio.to_thread(self.server.post, peer, receipt, "receipt")
        await asyncio.to_thread(self.server.read_copies, slot, message_ids)

    async def edit(self, slot: Slot, wa_message_id: str, body: str) -> bool:
        """The account (as its simulated phone would) edits a message it sent; the peer's
        device gets the new text. False when the server has no such message from it."""
        return await asyncio.to_thread(self.server.change, slot, wa_message_id, "edit", body)

    async def revoke(self, slot: Slot, wa_message_id: str) -> bool:
        """The account deletes a message it sent for everyone."""
        return await asyncio.to_thread(self.server.change, slot, wa_message_id, "revoke", None)

    async def phone_sets(self, slot: Slot, chat_id: str, change: ChatSettingsChange) -> None:
        """The account's phone changes a chat's settings (a test's and a demo's hook)."""
        await asyncio.to_thread(self.server.phone_sets, slot, chat_id, change)

    async def phone_settings(self, slot: Slot) -> dict[str, dict[str, Any]]:
        """The account's chats' settings as its phone shows them."""
        return await asyncio.to_thread(self.server.chat_settings, slot)

    async def send_chat_settings(
        self, slot: Slot, chat_id: str, change: ChatSettingsChange, last_message_at: float | None
    ) -> None:
        """The server keeps them: the account's phone shows them (never echoed back to
        this device, as WhatsApp does not)."""
        session = self.sessions.get(slot)
        if session is None or not session.connected:
            raise RuntimeError("not_connected")
        await asyncio.to_thread(self.server.set_chat_settings, slot, chat_id, change)

    async def _send_history(self, slot: Slot) -> None:
        """What a newly linked device gets: the account's messages its phone keeps, its
        chats with their settings and unread counts, and its peers as contacts."""
        if self.on_remote is None:
            return
        messages = await asyncio.to_thread(self.server.copies, slot)
        settings = await asyncio.to_thread(self.server.chat_settings, slot)
        chats: dict[str, dict[str, Any]] = {}
        contacts: dict[str, dict[str, Any]] = {}
        for fields in messages:
            chat = fields["chat_id"]
            entry = chats.setdefault(
                chat,
                {
                    "chat_id": chat,
                    "name": None,
                    "pinned": False,
                    "archived": False,
                    "muted_until": None,
                    "unread": 0,
                    **settings.get(chat, {}),
                },
            )
            if not fields["from_me"] and not fields["read"]:
                entry["unread"] += 1
            peer = slot_of(chat.partition("@")[0])
            if peer is not None:
                contacts[chat] = {"phone_jid": chat, "lid": lid_of(peer), "name": None}
        if messages or chats:
            await self.on_remote(
                HistoryImport(
                    slot, tuple(messages), tuple(chats.values()), tuple(contacts.values())
                )
            )

    async def _collect(self) -> None:
        """Take what the server keeps for this worker's connected accounts."""
        while True:
            await asyncio.sleep(self.mailbox_poll_s)
            ours = [slot for slot, session in self.sessions.items() if session.connected]
            if ours:
                await self._hand_over(ours)

    def _auth_file(self, slot: Slot) -> Path:
        return self.work_dir / "auth" / str(slot) / "simulator.json"

    def qr_payload(self, slot: Slot) -> str:
        session = self.sessions[slot]
        return f"wasp-simulator:{slot}:{session.rotation}"

    async def start(self, slot: Slot, on_status: OnStatus) -> None:
        if self._collector is None:
            self._collector = asyncio.create_task(self._collect())
        await asyncio.to_thread(self.server.record, slot, self.owner, "open")
        session = _Session(on_status)
        self.sessions[slot] = session
        if self._auth_file(slot).exists():
            session.connected = True
            await on_status(StatusEvent(slot, "CONNECTED"))
            return
        await on_status(StatusEvent(slot, "CONNECTING", qr=qr_data_url(self.qr_payload(slot))))
        session.rotor = asyncio.create_task(self._rotate(slot, session))

    async def _rotate(self, slot: Slot, session: _Session) -> None:
        while not session.connected:
            await asyncio.sleep(self.qr_interval_s)
            session.rotation += 1
            qr = qr_data_url(self.qr_payload(slot))
            await session.on_status(StatusEvent(slot, "CONNECTING", qr=qr))

    async def pair(self, slot: Slot, phone: str) -> str:
        """A deterministic 8-character code; `scan` completes the login as typing it would."""
        session = self.sessions.get(slot)
        if session is None or session.connected:
            raise PairFailed(f"slot {slot} is not logging in: connect it first")
        digest = hashlib.sha256(f"{slot}:{phone}:{session.rotation}".encode()).hexdigest()
        return digest[:8].upper()

    async def scan(self, slot: Slot) -> bool:
        """Log the slot in as if its QR was scanned; False when no QR is showing."""
        session = self.sessions.get(slot)
        if session is None or session.connected:
            return False
        session.connected = True
        if session.rotor is not None:
            session.rotor.cancel()
        auth = self._auth_file(slot)
        auth.parent.mkdir(parents=True, exist_ok=True)
        auth.write_text(json.dumps({"slot": str(slot), "paired": True}))
        await session.on_status(StatusEvent(slot, "CONNECTED"))
        await self._send_history(slot)  # a new device: WhatsApp's phone sends the history
        return True

    async def stop(self, slot: Slot) -> None:
        session = self.sessions.pop(slot, None)
        if session is None:
            return
        if session.rotor is not None:
            session.rotor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.rotor
        await asyncio.to_thread(self.server.record, slot, self.owner, "close")
        await session.on_status(StatusEvent(slot, "DISCONNECTED", reason="stopped"))

    async def logout(self, slot: Slot) -> None:
        await self.stop(slot)
        self._auth_file(slot).unlink(missing_ok=True)

    async def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
            self._collector = None
        for slot in list(self.sessions):
            await self.stop(slot)
        self.server.close()
        self.close_groups()
