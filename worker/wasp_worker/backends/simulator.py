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
shares (`simulator_server.ServerLedger`, SIMULATOR_SERVER_DIR): accepted message ids, the
mailbox of messages and receipts, and every session opening and closing by
owner, since WhatsApp notices an account connected from two places at once.

It also keeps what WhatsApp's phones keep: each account's copy of the messages
it sent and received, and its chats' settings (pin, archive, mute). A sender may
edit or delete for everyone a message it sent (`edit`, `revoke`: both accounts'
devices get the change through the mailbox, in order with its messages); a
newly linked device (`scan`) gets the account's history as a history sync;
settings sent from a worker (`send_chat_settings`) reach the account's "phone"
(the server's record), and a change made on the phone (`ServerLedger.phone_sets`)
reaches the worker holding the account, with the time it was made. Of two changes of a
chat's field the server keeps the later by that time (a worker's carries when the API
set it). When a session connects, the worker's `before_settings_read` (it sends the
settings the API set meanwhile) runs before the device takes what waits on the server:
the phone's changes and, for a new login, the history.

Groups, the directory of numbers on WhatsApp and block lists are `sim_groups`'
(`SimulatorGroups`, mixed in); a blocked sender's messages are never delivered.

Presence: an account's connection subscribes to a peer's (`subscribe_presence`,
ended by the next open or close of its session, as a WhatsApp connection's
subscriptions end with it); what the peer shows (`send_presence`) goes through
the mailbox to a subscribed connection only, and is dropped once stale. A
message the worker could not store stays in the mailbox (unacknowledged) and is
handed over again at the next poll.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasp.slots import Slot
from wasp_worker import media, outgoing_media
from wasp_worker.backends.base import (
    ACTIONS,
    CONTENT_KINDS,
    ChatSettingsChange,
    HistoryImport,
    MessageEdit,
    MessageReaction,
    MessageRevoke,
    OnInbound,
    OnPresence,
    OnReceipt,
    OnRemote,
    OnStatus,
    Outgoing,
    PairFailed,
    PollVote,
    PresenceEvent,
    PresenceState,
    ReceiptEvent,
    ReceiptState,
    RemoteChange,
    RemoteChatSettings,
    SendFailed,
    SendKind,
    StatusEvent,
)
from wasp_worker.backends.groups import GroupRefused
from wasp_worker.backends.proxy_gate import ProxyGate
from wasp_worker.backends.sim_groups import SimulatorGroups
from wasp_worker.backends.simulator_server import (
    CHANGE_KINDS,
    MEDIA_BYTES,
    ServerLedger,
    inbound_fields,
    jid_of,
    lid_of,
    phone_of,
    slot_of,
    slot_of_lid,
)
from wasp_worker.qr import qr_data_url

PRESENCE_STALE_S = 30.0

# The server's names, for the simulator's users (tests, `wasp dev`, benchmarks).
__all__ = [
    "ServerLedger",
    "SimulatorBackend",
    "inbound_fields",
    "jid_of",
    "lid_of",
    "phone_of",
    "slot_of",
    "slot_of_lid",
]


def _remote(kind: str, fields: dict[str, Any]) -> RemoteChange:
    """A change the server keeps in the mailbox, as the backend reports it."""
    slot, chat = Slot.parse(fields["slot"]), fields["chat_id"]
    if kind == "reaction":
        return MessageReaction(
            slot,
            chat,
            fields["wa_message_id"],
            fields["reactor"],
            fields["emoji"],
            False,
            fields["at"],
        )
    if kind == "vote":
        options = tuple(fields["options"])
        return PollVote(slot, chat, fields["poll_id"], fields["voter"], options, fields["at"])
    if kind == "edit":
        return MessageEdit(slot, chat, fields["wa_message_id"], fields["body"], fields["at"])
    if kind == "revoke":
        return MessageRevoke(slot, chat, fields["wa_message_id"], fields["at"])
    change = ChatSettingsChange(
        fields["pinned"],
        fields["archived"],
        fields["mute"],
        fields["muted_until"],
        fields.get("at"),
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


@dataclass
class _Session:
    on_status: OnStatus
    rotation: int = 0
    rotor: asyncio.Task[None] | None = None
    connected: bool = False
    reading: bool = False  # takes what waits on the server: once `before_settings_read` ran


@dataclass
class SimulatorBackend(SimulatorGroups):
    """Sessions whose "auth state" is a small JSON file under `work_dir/auth/<slot>/`."""

    work_dir: Path
    qr_interval_s: float = 20.0
    on_inbound: OnInbound | None = None
    on_receipt: OnReceipt | None = None
    on_remote: OnRemote | None = None
    on_presence: OnPresence | None = None
    before_settings_read: Callable[[Slot], Awaitable[None]] | None = None
    sends: frozenset[SendKind] = CONTENT_KINDS | ACTIONS
    owner: str = "simulator"
    server_dir: Path | None = None  # the server ledger's; work_dir when unset
    mailbox_poll_s: float = 0.2
    sessions: dict[Slot, _Session] = field(default_factory=dict)
    server: ServerLedger = field(init=False)
    _handing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one hand-over at a time
    _collector: asyncio.Task[None] | None = None
    proxy_gate: ProxyGate | None = None  # a slot's proxy must answer before it starts

    def __post_init__(self) -> None:
        self.server = ServerLedger(self.server_dir or self.work_dir)

    def ledger(self) -> tuple[int, int]:
        """(distinct messages the server accepted, repeated sends deduplicated)."""
        return self.server.counts()

    async def send(self, slot: Slot, message: Outgoing) -> None:
        session = self.sessions.get(slot)
        if session is None or not session.connected:
            raise SendFailed("not_connected")
        if message.kind in ACTIONS:
            await self._send_action(slot, message)
            return
        user, _, server = message.destination.partition("@")
        recipient = slot_of(user) if server == "s.whatsapp.net" else None
        if recipient is None:
            raise SendFailed("not_a_simulated_account")
        # Groups and contacts: a recipient that blocked the sender never gets its messages
        # (the sender sees it sent, never delivered).
        if await self.blocked_by(recipient, slot):
            return
        fields = inbound_fields(recipient, slot, message)
        name = message.details.get("file")
        if name:  # uploaded bytes travel with the message; the recipient's device saves them
            data = await asyncio.to_thread(outgoing_media.read, self.work_dir, name)
            fields[MEDIA_BYTES] = base64.b64encode(data).decode()
        fresh = await asyncio.to_thread(self.server.accept, slot, message, recipient, fields)
        held = self.sessions.get(recipient)
        if fresh and held is not None and held.reading:
            await self._hand_over([recipient])  # ours: no need to wait for the next poll

    def account_jid(self, slot: Slot) -> str:
        return jid_of(slot)

    async def _send_action(self, slot: Slot, message: Outgoing) -> None:
        """An action on a message reaches the other side's devices as a remote change: the
        peer of a direct chat, every other member of a group (each naming the chat its way)."""
        chat = message.destination
        if chat.endswith("@g.us"):
            try:
                info = await self.group_info(slot, chat)
            except GroupRefused:
                raise SendFailed("not_a_group_member") from None
            members = (slot_of(p.jid.partition("@")[0]) for p in info.participants)
            recipients = [(member, chat) for member in members if member and member != slot]
        else:
            user, _, server = chat.partition("@")
            peer = slot_of(user) if server == "s.whatsapp.net" else None
            if peer is None:
                raise SendFailed("not_a_simulated_account")
            recipients = [(peer, jid_of(slot))]
        recipients = [r for r in recipients if not await self.blocked_by(r[0], slot)]
        fresh = await asyncio.to_thread(
            self.server.deliver_action,
            slot,
            message.wa_message_id,
            message.kind,
            message.details,
            recipients,
        )
        held = [
            device
            for device, _ in recipients
            if (session := self.sessions.get(device)) is not None and session.reading
        ]
        if fresh and held:
            await self._hand_over(held)

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
                if MEDIA_BYTES in fields:
                    await asyncio.to_thread(self._save_media, fields)
                try:
                    await self.on_inbound(fields)
                except Exception:
                    # Not stored (the worker logged why): left unacknowledged, the server
                    # hands it over again at the next poll, and nothing after it overtakes it.
                    break
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
        await self._hand_over_presence(recipients)

    async def _hand_over_presence(self, recipients: list[Slot]) -> None:
        """Typing and recording of the peers these accounts subscribed to; one older than
        `PRESENCE_STALE_S` is dropped (it says nothing about now)."""
        if self.on_presence is None:
            return
        for seq, _, seen in await asyncio.to_thread(self.server.waiting, recipients, ("presence",)):
            if time.time() - float(seen["at"]) <= PRESENCE_STALE_S:
                await self.on_presence(
                    PresenceEvent(
                        Slot.parse(seen["slot"]),
                        seen["chat_id"],
                        seen["sender"],
                        seen["state"],
                        float(seen["at"]),
                    )
                )
            await asyncio.to_thread(self.server.ack, seq)

    async def subscribe_presence(self, slot: Slot, chat_id: str) -> None:
        """The server sends this connection the peer's presence from now on."""
        session = self.sessions.get(slot)
        if session is None or not session.connected:
            raise RuntimeError("not_connected")
        user, _, server = chat_id.partition("@")
        peer = slot_of(user) if server in ("s.whatsapp.net", "") else None
        if peer is not None:
            await asyncio.to_thread(self.server.subscribe_presence, slot, peer)

    async def send_presence(self, slot: Slot, chat_id: str, state: PresenceState) -> None:
        """The peer's device sees it if its connection subscribed to this account's."""
        session = self.sessions.get(slot)
        if session is None or not session.connected:
            raise RuntimeError("not_connected")
        user, _, server = chat_id.partition("@")
        peer = slot_of(user) if server in ("s.whatsapp.net", "") else None
        if peer is None:
            return  # nobody simulated to show it to
        posted = await asyncio.to_thread(self.server.post_presence, slot, peer, state)
        held = self.sessions.get(peer)
        if posted and held is not None and held.reading:
            await self._hand_over([peer])  # ours: no need to wait for the next poll

    def _save_media(self, fields: dict[str, Any]) -> None:
        """A message's file onto this worker's volume, as a device downloads it: the
        inbound fields name it (`media_url`) instead of carrying its bytes."""
        data = base64.b64decode(fields.pop(MEDIA_BYTES))
        slot = Slot.parse(fields["slot"])
        name = media.save(self.work_dir, slot, fields["wa_message_id"], fields["mime_type"], data)
        fields["media_url"] = f"/api/accounts/{slot}/media/{name}"

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
        """The account's phone edits a message it sent (a test's and a demo's hook): the
        peer's device and the account's own linked device (this worker) get the new text.
        False when the server has no such message from it."""
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
            if fields["from_me"]:
                fields["read"] = True  # what the account sent is never unread
            elif not fields["read"]:
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
            ours = [slot for slot, session in self.sessions.items() if session.reading]
            if ours:
                await self._hand_over(ours)

    def _auth_file(self, slot: Slot) -> Path:
        return self.work_dir / "auth" / str(slot) / "simulator.json"

    def qr_payload(self, slot: Slot) -> str:
        session = self.sessions[slot]
        return f"wasp-simulator:{slot}:{session.rotation}"

    async def start(self, slot: Slot, on_status: OnStatus) -> None:
        if self.proxy_gate is not None and not await self.proxy_gate.admit(
            slot, on_status, self.start
        ):
            return
        if self._collector is None:
            self._collector = asyncio.create_task(self._collect())
        await asyncio.to_thread(self.server.record, slot, self.owner, "open")
        session = _Session(on_status)
        self.sessions[slot] = session
        if self._auth_file(slot).exists():
            session.connected = True
            await on_status(StatusEvent(slot, "CONNECTED"))
            await self._start_reading(slot, session)
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
        await self._start_reading(slot, session)
        await self._send_history(slot)  # a new device: WhatsApp's phone sends the history
        return True

    async def _start_reading(self, slot: Slot, session: _Session) -> None:
        """The worker's settings first (`before_settings_read`), then what the server kept."""
        if self.before_settings_read is not None:
            await self.before_settings_read(slot)
        session.reading = session.connected

    async def stop(self, slot: Slot) -> None:
        if self.proxy_gate is not None:
            await self.proxy_gate.cancel(slot)
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
        waiting = list(self.proxy_gate.waits) if self.proxy_gate is not None else []
        for slot in [*self.sessions, *waiting]:
            await self.stop(slot)
        self.server.close()
        self.close_groups()
