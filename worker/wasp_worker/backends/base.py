"""The interface every session backend implements, and the events it reports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from wasp.slots import Slot

Status = Literal["CONNECTING", "CONNECTED", "DISCONNECTED"]
ReceiptState = Literal["delivered", "read", "played"]
SendKind = Literal[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "voice",
    "sticker",
    "location",
    "contact",
    "poll",
    "reaction",
    "edit",
    "delete",
    "vote",
]
"""What a queued message is (the queue row's `kind`): a content kind, or an action on a
message sent before (reaction, edit, delete for everyone, poll vote)."""
ACTIONS: frozenset[SendKind] = frozenset({"reaction", "edit", "delete", "vote"})
MEDIA_AND_TEXT: frozenset[SendKind] = frozenset({"text", "image", "video", "audio", "document"})
CONTENT_KINDS: frozenset[SendKind] = MEDIA_AND_TEXT | {
    "voice",
    "sticker",
    "location",
    "contact",
    "poll",
}
"""Every kind of message with content of its own (not an action on an earlier message)."""


@dataclass(frozen=True)
class StatusEvent:
    """A session changed state; `qr` is a PNG data URL while CONNECTING for a login.
    `reason` is one snake_case word from what WhatsApp said (logged_out, stream_replaced,
    temporary_ban, connect_failure, keepalive_timeout, bad_mac_breaker, ...) and `detail`
    its particulars (a ban's expiry, a failure's code), both shown to clients.
    `logged_out`: the account is no longer linked (its auth is gone): only a new login
    brings it back, so the worker stops wanting it."""

    slot: Slot
    status: Status
    qr: str | None = None
    reason: str | None = None
    logged_out: bool = False
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ReceiptEvent:
    """WhatsApp says messages this slot sent reached the recipient's device (`delivered`),
    were read, or (voice notes) played."""

    slot: Slot
    chat_id: str
    message_ids: tuple[str, ...]
    state: ReceiptState
    timestamp: int


@dataclass(frozen=True)
class MessageEdit:
    """The sender changed the text of a message of this slot's chat."""

    slot: Slot
    chat_id: str
    wa_message_id: str
    body: str
    edited_at: float


@dataclass(frozen=True)
class MessageRevoke:
    """A message of this slot's chat was deleted for everyone."""

    slot: Slot
    chat_id: str
    wa_message_id: str
    deleted_at: float


@dataclass(frozen=True)
class HistoryImport:
    """History WhatsApp sent this slot's newly linked device: messages shaped like the
    inbound event's fields plus `read`, chats (`chat_id`, `name`, `pinned`, `archived`,
    `muted_until`, `unread`), contacts (`phone_jid`, `lid`, `name`, `push_name`), and the
    messages' reactions and poll votes (stored without webhook events: history is not news)."""

    slot: Slot
    messages: tuple[dict[str, Any], ...]
    chats: tuple[dict[str, Any], ...]
    contacts: tuple[dict[str, Any], ...]
    reactions: tuple[MessageReaction, ...] = ()
    votes: tuple[PollVote, ...] = ()


@dataclass(frozen=True)
class ChatSettingsChange:
    """Pin, archive and mute of one chat: None leaves pinned/archived as they are;
    `muted_until` counts only when `mute` is set (then None unmutes). `at`: when they were
    set (Unix time), where known: of two changes of a field the later wins
    (`pending_settings`); neonize knows no time for the phone's."""

    pinned: bool | None = None
    archived: bool | None = None
    mute: bool = False
    muted_until: float | None = None
    at: float | None = None

    def __bool__(self) -> bool:
        return self.pinned is not None or self.archived is not None or self.mute

    @classmethod
    def of(cls, settings: Mapping[str, Any], at: float | None = None) -> ChatSettingsChange:
        """The WhatsApp part of a conversation's settings as the PATCH body gives them
        (`tags` stay on the shard: WhatsApp has none), set at `at`."""
        return cls(
            pinned=settings.get("pinned"),
            archived=settings.get("archived"),
            mute="muted_until" in settings,
            muted_until=settings.get("muted_until"),
            at=at,
        )


@dataclass(frozen=True)
class RemoteChatSettings:
    """The account's phone (or another linked device) changed a chat's settings."""

    slot: Slot
    chat_id: str
    change: ChatSettingsChange


@dataclass(frozen=True)
class MessageReaction:
    """Someone reacted to a message of this slot's chat (`emoji` "" removes their reaction).
    `reactor` is the reacting person's JID; `from_me` when it was the account itself (from
    its phone or another linked device)."""

    slot: Slot
    chat_id: str
    wa_message_id: str
    reactor: str
    emoji: str
    from_me: bool
    timestamp: float


OPTION_HASH_PREFIX = "sha256:"
"""How a vote names an option by its hash (`sha256:` + the hex SHA-256 of its name)."""


@dataclass(frozen=True)
class PollVote:
    """A voter's current choice in a poll of this slot's chat: the option names, or their
    hashes (`OPTION_HASH_PREFIX`) when only the store knows the poll's options (WhatsApp
    sends hashes; the store resolves them). An empty choice withdraws the vote."""

    slot: Slot
    chat_id: str
    poll_id: str
    voter: str
    options: tuple[str, ...]
    timestamp: float


RemoteChange = (
    MessageEdit | MessageRevoke | HistoryImport | RemoteChatSettings | MessageReaction | PollVote
)
"""What WhatsApp says changed in a slot's history, besides new messages and receipts."""


class Outgoing(Protocol):
    """What a backend reads of a queued message (the queue's row has these and more):
    the interface names its own needs instead of depending on the queue's storage."""

    @property
    def wa_message_id(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def media_url(self) -> str | None: ...
    @property
    def file_name(self) -> str | None: ...
    @property
    def details(self) -> dict[str, Any]: ...


OnStatus = Callable[[StatusEvent], Awaitable[None]]
OnInbound = Callable[[dict[str, Any]], Awaitable[None]]
"""Receives the inbound event's fields (slot, from, to, body, chat_id, ...) of one message."""
OnReceipt = Callable[[ReceiptEvent], Awaitable[None]]
OnRemote = Callable[[RemoteChange], Awaitable[None]]
KnownChats = Callable[[Slot], Awaitable[list[str]]]
"""The chats the shard's store knows for a slot (whose settings a backend may look up)."""


class Backend(Protocol):
    """Starts and stops the WhatsApp session of one slot; reports through `on_status`,
    inbound messages through `on_inbound`, receipts of sent messages through `on_receipt`."""

    on_inbound: OnInbound | None
    on_receipt: OnReceipt | None
    # The kinds `send` takes: any other is refused with 501 before it is queued.
    sends: frozenset[SendKind]

    async def start(self, slot: Slot, on_status: OnStatus) -> None:
        """Begin connecting; return once the session is initialised (QR shown or resumed)."""

    async def stop(self, slot: Slot) -> None:
        """Close the session, keeping its auth state for the next start."""

    async def logout(self, slot: Slot) -> None:
        """Unlink the device and wipe the session's auth state."""

    async def pair(self, slot: Slot, phone: str) -> str:
        """A pairing code to type on the phone instead of scanning the QR."""

    async def send(self, slot: Slot, message: Outgoing) -> str | None:
        """Send one queued message from a CONNECTED slot; SendFailed for a final refusal.
        Returns the id WhatsApp knows the message by when it is not the row's
        `wa_message_id` (a backend that cannot choose the id), else None."""

    async def phone_for_lid(self, slot: Slot, lid: str) -> str | None:
        """The phone JID WhatsApp knows for a LID (as the session's store has it), None when
        it knows none. Raises when the session cannot look it up now (not running)."""

    async def mark_read(
        self, slot: Slot, chat_id: str, sender: str | None, message_ids: list[str]
    ) -> None:
        """Send read receipts for inbound messages of a chat (`sender`: who sent them, needed
        in groups). Raises for a session that is not CONNECTED."""

    async def close(self) -> None:
        """Stop every session (worker shutdown)."""


@runtime_checkable
class SyncsChats(Protocol):
    """A backend that also reports edits, deletes, history and the phone's chat settings
    (`on_remote`) and sends the chat settings set here (a backend without it: `unsupported`)."""

    on_remote: OnRemote | None

    async def send_chat_settings(
        self, slot: Slot, chat_id: str, change: ChatSettingsChange, last_message_at: float | None
    ) -> None:
        """Tell WhatsApp (the account's phone and other devices) a chat's new settings.
        Raises RuntimeError with the reason when they did not go out."""


@runtime_checkable
class KnowsAccount(Protocol):
    """A backend that knows who an account is on WhatsApp (its own JID): the reactor and
    voter of its own actions, and whom a group's admins are compared with."""

    def account_jid(self, slot: Slot) -> str | None:
        """The account's own phone JID; None when the backend does not know it (yet)."""


class SendFailed(Exception):
    """The backend refused a message for good; `reason` is stored on the queue row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PairFailed(Exception):
    """No pairing code now; the message says why (no login in progress, rejected number)."""


# -- chat presence: typing and recording -------------------------------------------------

PresenceState = Literal["typing", "recording", "paused"]
"""What this account shows in a chat: typing, recording a voice note, or neither."""
SeenPresence = Literal["typing", "recording", "paused", "available", "unavailable"]


@dataclass(frozen=True)
class PresenceEvent:
    """A chat's peer types, records or paused (chat presence), or came online or went
    offline; only for chats the session subscribed to (`subscribe_presence`)."""

    slot: Slot
    chat_id: str
    sender: str
    state: SeenPresence
    at: float


OnPresence = Callable[[PresenceEvent], Awaitable[None]]


@runtime_checkable
class ChatPresence(Protocol):
    """A backend that shows and sees typing and recording (a backend without it: 501)."""

    on_presence: OnPresence | None

    async def subscribe_presence(self, slot: Slot, chat_id: str) -> None:
        """Ask WhatsApp for the chat's presence until the connection ends. Raises
        RuntimeError with the reason when it could not ("not_connected", ...)."""

    async def send_presence(self, slot: Slot, chat_id: str, state: PresenceState) -> None:
        """Show the account typing, recording or paused in the chat now (not queued:
        presence is ephemeral). Raises RuntimeError with the reason when it did not go."""
