"""What a cell and the worker say to each other over their pipe.

Frozen, picklable dataclasses with no neonize import, so the worker (which never
loads neonize) and the cell share one definition. `Command` goes from the worker
to a cell; `Event` comes back. Requests that want an answer (Send, Pair,
MarkRead, LookupLid, SetChatSettings, SubscribePresence, SendPresence, and every
`GroupsRequest`) carry a `request_id` that their `Reply` repeats. JIDs are
"user@server" strings; times are Unix seconds.

WhatsApp's own codes travel as whatsmeow numbers them (`code`, e.g. 401 for a
logout, 101 for a ban for messaging too many people) together with neonize's
enum name (`name`), because neonize renumbers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from wasp_worker.backends.base import PresenceState, SeenPresence
from wasp_worker.backends.groups import (
    GroupInfo,
    NumberCheck,
    ParticipantAction,
    ParticipantResult,
    Picture,
    UserInfo,
)

ReceiptState = Literal["delivered", "read", "played"]
MessageType = Literal[
    "text",
    "image",
    "video",
    "audio",
    "voice",
    "document",
    "sticker",
    "location",
    "contact",
    "poll",
]

# -- worker -> cell -----------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Connect a session from its store (a QR follows if it has no login)."""

    slot: str
    db_path: str
    work_dir: str
    # The proxy URL, with its credentials if any (SECRET: never logged); "" connects directly.
    proxy: str = field(default="", repr=False)


@dataclass(frozen=True)
class Stop:
    """Close a session, keeping its store; `Ended` follows."""

    slot: str


@dataclass(frozen=True)
class Send:
    request_id: int
    slot: str
    to: str
    kind: str  # a content kind (`base.CONTENT_KINDS`)
    text: str | None
    data: bytes | None
    file_name: str | None
    mime: str | None
    # The queue row's details: reply quote, mentions, link preview, location, contacts,
    # poll (`wasp_worker.outgoing_payload`), or an action's target.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    request_id: int
    slot: str
    phone: str


@dataclass(frozen=True)
class MarkRead:
    """Send read receipts for inbound messages of one chat (`sender`: who sent them)."""

    request_id: int
    slot: str
    chat: str
    sender: str | None
    message_ids: tuple[str, ...]


@dataclass(frozen=True)
class LookupLid:
    """The phone JID whatsmeow's store has for a LID (learnt from messages and contacts)."""

    request_id: int
    slot: str
    lid: str


@dataclass(frozen=True)
class SetChatSettings:
    """Tell WhatsApp (an app-state patch) what the user set on a chat here; `None` leaves a
    setting as it is, except `muted_until` when `mute` is set (then None unmutes)."""

    request_id: int
    slot: str
    chat_id: str
    pinned: bool | None
    archived: bool | None
    mute: bool
    muted_until: float | None
    last_message_at: float | None  # an archive names the chat's last message's time


@dataclass(frozen=True)
class SubscribePresence:
    """Ask WhatsApp for a direct chat's typing and online presence (until the connection
    ends: a reconnect needs it again); `PresenceResult` answers."""

    request_id: int
    slot: str
    chat_id: str


@dataclass(frozen=True)
class SendPresence:
    """Show this account typing, recording a voice note, or neither (`paused`) in a chat;
    `PresenceResult` answers."""

    request_id: int
    slot: str
    chat_id: str
    state: PresenceState


@dataclass(frozen=True)
class ReadChatSettings:
    """Read whatsmeow's own record of these chats' settings (what the phone set, as the
    app-state sync brought it); `ChatSettingsSeen` answers."""

    slot: str
    chat_ids: tuple[str, ...]


# -- worker -> cell: groups and contacts (each answered by a `GroupsResult`) ---------------


@dataclass(frozen=True)
class GroupsRequest:
    """What every group and contact request carries."""

    request_id: int
    slot: str


@dataclass(frozen=True)
class JoinedGroups(GroupsRequest):
    pass


@dataclass(frozen=True)
class GetGroupInfo(GroupsRequest):
    group_id: str


@dataclass(frozen=True)
class CreateGroup(GroupsRequest):
    name: str
    participants: tuple[str, ...]


@dataclass(frozen=True)
class RenameGroup(GroupsRequest):
    group_id: str
    name: str


@dataclass(frozen=True)
class UpdateParticipants(GroupsRequest):
    group_id: str
    action: ParticipantAction
    participants: tuple[str, ...]


@dataclass(frozen=True)
class GetInviteLink(GroupsRequest):
    group_id: str
    revoke: bool


@dataclass(frozen=True)
class LeaveGroup(GroupsRequest):
    group_id: str


@dataclass(frozen=True)
class CheckNumbers(GroupsRequest):
    numbers: tuple[str, ...]  # digits, no +


@dataclass(frozen=True)
class GetPicture(GroupsRequest):
    jid: str


@dataclass(frozen=True)
class GetUserInfo(GroupsRequest):
    jid: str


@dataclass(frozen=True)
class SetBlocked(GroupsRequest):
    jid: str
    blocked: bool


GroupsCommand = (
    JoinedGroups
    | GetGroupInfo
    | CreateGroup
    | RenameGroup
    | UpdateParticipants
    | GetInviteLink
    | LeaveGroup
    | CheckNumbers
    | GetPicture
    | GetUserInfo
    | SetBlocked
)

Command = (
    Start
    | Stop
    | Send
    | Pair
    | MarkRead
    | LookupLid
    | SetChatSettings
    | ReadChatSettings
    | SubscribePresence
    | SendPresence
    | GroupsCommand
)

# -- cell -> worker -----------------------------------------------------------


class Location(TypedDict):
    latitude: float
    longitude: float
    name: str | None
    address: str | None


class ContactCard(TypedDict):
    name: str
    vcard: str
    phone: str | None  # the first number of the vCard (its `waid`, else its TEL), digits


class Poll(TypedDict):
    question: str
    options: list[str]
    selectable_count: int  # 0: any number of options


# One inbound message as the worker's `on_inbound` receives it (functional form: "from"
# is a keyword).
InboundFields = TypedDict(
    "InboundFields",
    {
        "slot": str,
        "from": str,
        "to": str,
        "body": str,
        "chat_id": str,
        "chat_type": Literal["direct", "group"],
        "sender_jid_raw": str,
        "push_name": str | None,
        "wa_message_id": str,
        "timestamp": int,
        "media_type": str | None,
        "media_url": str | None,
        "mime_type": str | None,
        "file_name": str | None,
        "file_size": int | None,
        "from_me": bool,  # sent from the account's own phone or another linked device
        "sender_lid": str | None,
        "sender_phone_jid": str | None,
        "media_error": NotRequired[str],  # the media could not be fetched (its error's name)
        "message_type": MessageType,
        "quoted_id": str | None,  # the message this one replies to (ContextInfo.stanzaID)
        "mentions": list[str],  # JIDs
        "location": Location | None,
        "contacts": list[ContactCard] | None,
        "poll": Poll | None,
    },
)


@dataclass(frozen=True)
class Qr:
    slot: str
    code: str


@dataclass(frozen=True)
class Connected:
    slot: str
    jid: str = ""  # the account's own phone JID (user@server), as whatsmeow's store has it


@dataclass(frozen=True)
class Disconnected:
    """The socket dropped; whatsmeow reconnects by itself."""

    slot: str


@dataclass(frozen=True)
class LoggedOut:
    """The device was unlinked; whatsmeow already deleted the store."""

    slot: str
    on_connect: bool  # refused at connect (a connect failure) rather than a stream error
    code: int | None
    name: str | None


@dataclass(frozen=True)
class StreamReplaced:
    """Another client connected with the same keys; whatsmeow does not reconnect."""

    slot: str


@dataclass(frozen=True)
class TemporaryBan:
    slot: str
    code: int | None
    name: str | None
    expire_s: int  # 0: WhatsApp did not say


@dataclass(frozen=True)
class ConnectFailure:
    slot: str
    code: int | None
    name: str | None
    message: str


@dataclass(frozen=True)
class ClientOutdated:
    """WhatsApp refuses this client version (405): only a newer neonize helps."""

    slot: str


@dataclass(frozen=True)
class KeepAliveTimeout:
    """Pings go unanswered; the socket stays open and whatsmeow forces a reconnect
    only after three minutes without an answer."""

    slot: str
    error_count: int
    last_success: int


@dataclass(frozen=True)
class KeepAliveRestored:
    slot: str


@dataclass(frozen=True)
class StreamError:
    slot: str
    code: str


@dataclass(frozen=True)
class Undecryptable:
    """A message that could not be decrypted ("Bad MAC"); `unavailable`: WhatsApp did not
    send it to this device at all, which is no decrypt failure."""

    slot: str
    unavailable: bool


@dataclass(frozen=True)
class Message:
    slot: str
    fields: InboundFields


@dataclass(frozen=True)
class Receipt:
    """A recipient's device received, read or played messages this account sent."""

    slot: str
    chat_id: str
    message_ids: tuple[str, ...]
    state: ReceiptState
    timestamp: int


@dataclass(frozen=True)
class MessageEdited:
    """The sender changed a message's text (every device shows the new text)."""

    slot: str
    chat_id: str
    wa_message_id: str
    body: str
    edited_at: int


@dataclass(frozen=True)
class MessageRevoked:
    """The sender (or a group admin) deleted a message for everyone."""

    slot: str
    chat_id: str
    wa_message_id: str
    deleted_at: int


@dataclass(frozen=True)
class Reaction:
    """Someone reacted to a message of a chat ("" emoji: removed their reaction)."""

    slot: str
    chat_id: str
    wa_message_id: str
    reactor: str  # JID
    emoji: str
    from_me: bool
    timestamp: float


@dataclass(frozen=True)
class PollUpdate:
    """A voter's current choice in a poll, decrypted in the cell: the SHA-256 digests of the
    chosen options' names, hex (only the worker's store knows the poll's options)."""

    slot: str
    chat_id: str
    poll_id: str
    voter: str  # JID
    option_hashes: tuple[str, ...]
    timestamp: float


@dataclass(frozen=True)
class PresenceSeen:
    """A chat's peer is typing, recording, paused (chat presence), or came online or went
    offline (presence)."""

    slot: str
    chat_id: str
    sender: str  # JID
    state: SeenPresence
    at: float


class HistoryChat(TypedDict):
    """A chat as a history sync describes it (`muted_until`: Unix time, None: not muted)."""

    chat_id: str
    name: str | None
    pinned: bool
    archived: bool
    muted_until: float | None
    unread: int


class HistoryContact(TypedDict):
    phone_jid: str | None
    lid: str | None
    name: str | None
    push_name: str | None


@dataclass(frozen=True)
class HistorySynced:
    """Messages and chats WhatsApp's phone sends a newly linked device (and later in
    chunks): each message shaped like `InboundFields` plus `read`."""

    slot: str
    messages: tuple[dict[str, Any], ...]
    chats: tuple[HistoryChat, ...]
    contacts: tuple[HistoryContact, ...]
    # The messages' reactions and (already decrypted) poll votes, as the phone kept them.
    reactions: tuple[Reaction, ...] = ()
    votes: tuple[PollUpdate, ...] = ()


@dataclass(frozen=True)
class OfflineSyncCompleted:
    """whatsmeow delivered what waited on the server while the device was offline."""

    slot: str


@dataclass(frozen=True)
class ChatSetting:
    chat_id: str
    pinned: bool
    archived: bool
    muted_until: float | None


@dataclass(frozen=True)
class ChatSettingsSeen:
    """whatsmeow's record of chats' settings, for the chats it has one of."""

    slot: str
    settings: tuple[ChatSetting, ...]


@dataclass(frozen=True)
class Ended:
    """The session's `connect()` returned: stopped, or the connect failed."""

    slot: str
    reason: str


@dataclass(frozen=True)
class SendResult:
    request_id: int
    outcome: Literal["sent", "retry", "failed"]
    detail: str  # the WhatsApp message id when sent, else why not


@dataclass(frozen=True)
class PairResult:
    request_id: int
    ok: bool
    detail: str  # the pairing code when ok, else why not


@dataclass(frozen=True)
class MarkReadResult:
    request_id: int
    ok: bool
    detail: str  # why not, when not ok


@dataclass(frozen=True)
class LookupResult:
    request_id: int
    ok: bool
    detail: str  # the phone JID when ok ("" when the store knows none), else why not


@dataclass(frozen=True)
class PresenceResult:
    request_id: int
    ok: bool
    detail: str  # why not, when not ok


@dataclass(frozen=True)
class ChatSettingsResult:
    request_id: int
    ok: bool
    detail: str  # why not, when not ok


GroupsValue = (
    tuple[GroupInfo, ...]
    | GroupInfo
    | tuple[ParticipantResult, ...]
    | str
    | tuple[NumberCheck, ...]
    | Picture
    | UserInfo
    | None
)


@dataclass(frozen=True)
class GroupsResult:
    """The answer to a `GroupsRequest`: its value, or why not (`error`: "not_logged_in", or
    whatsmeow's error's name and text)."""

    request_id: int
    value: GroupsValue
    error: str | None = None


@dataclass(frozen=True)
class CellDied:
    """Made by the worker's reader of a cell's pipe when the pipe breaks; never sent."""

    cell: int
    process: Any


SessionEvent = (
    Qr
    | Connected
    | Disconnected
    | LoggedOut
    | StreamReplaced
    | TemporaryBan
    | ConnectFailure
    | ClientOutdated
    | KeepAliveTimeout
    | KeepAliveRestored
    | StreamError
    | Undecryptable
    | Message
    | Receipt
    | MessageEdited
    | MessageRevoked
    | Reaction
    | PollUpdate
    | PresenceSeen
    | HistorySynced
    | OfflineSyncCompleted
    | ChatSettingsSeen
    | Ended
)
Reply = (
    SendResult
    | PairResult
    | MarkReadResult
    | LookupResult
    | ChatSettingsResult
    | PresenceResult
    | GroupsResult
)
Event = SessionEvent | Reply | CellDied
