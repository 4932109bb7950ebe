"""The worker's HTTP API, declared once: every operation's method, path, summary,
body, query and path parameters and answers, without the code that serves it.

Two programs serve these operations. The worker binds a handler to each one by
name (`openapi.bind`, which refuses a table with an operation left unbound) and
answers them; the master serves the slot operations under the same paths and
routes each request to the worker of the shard that owns the slot. Both OpenAPI
documents are generated from this table and its models, so the master cannot
document a slot operation differently from the worker that answers it, and
neither program has to import the other.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from wasp import data_api
from wasp.contract import WORKER_TOKEN_HEADER
from wasp.message_actions import EditRequest, ReactionRequest, VoteRequest
from wasp.messages import Destination, ScheduleRequest, SendRequest, UploadForm
from wasp.openapi import ApiInfo, Endpoint
from wasp.pacing import PacingOverride
from wasp.presence import PresenceRequest
from wasp.slots import SlotId
from wasp.validation import JsonInt
from wasp.webhooks import SUBSCRIPTION_ID_PATTERN

# An event id of `GET /events`: `<epoch>.<seq>`.
CURSOR_PATTERN = r"^[0-9A-Za-z]{1,20}\.[0-9]{1,19}$"
# A media file's name on the shard's volume, as the worker makes them (a safe message id and
# an extension): a test holds the worker's names to it.
MEDIA_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,128}\.[a-z0-9]{1,5}$"
MAX_WAIT_S = 30.0


class LogsQuery(BaseModel):
    """Query of GET /logs."""

    limit: int = Field(100, ge=1, le=500, description="How many of the latest events.")


class EventsQuery(BaseModel):
    """Query of GET /events."""

    after: str | None = Field(
        None,
        pattern=CURSOR_PATTERN,
        description="The last event id seen (`<epoch>.<seq>`); absent: every kept event.",
    )
    wait: float = Field(
        0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False, description="Seconds to wait for one."
    )
    limit: int = Field(1000, ge=1, le=5000, description="Most events in one answer.")


class OpenChatRequest(BaseModel):
    """Body of POST /api/accounts/{slot}/openChat."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    chat_id: Destination
    limit: JsonInt = Field(50, ge=1, le=500, description="How many of the latest messages.")


class PairRequest(BaseModel):
    """Body of POST /api/accounts/{slot}/pair."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    phone: str = Field(
        pattern=r"^[1-9][0-9]{6,19}$",
        description="International number, digits only, no + or leading 0.",
    )


class DeadLettersQuery(BaseModel):
    """Query of GET /api/accounts/{slot}/webhooks/dead."""

    subscription: str | None = Field(
        None, pattern=SUBSCRIPTION_ID_PATTERN, description="Only this subscription's."
    )


class ReplayRequest(BaseModel):
    """Body of POST /api/accounts/{slot}/webhooks/replay: which dead letters to send again."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    subscription: str | None = Field(
        None, pattern=SUBSCRIPTION_ID_PATTERN, description="Only this subscription's."
    )
    ids: list[Annotated[str, StringConstraints(pattern=r"^evt_[0-9a-f]{32}$")]] | None = Field(
        None, max_length=1000, description="Only these event ids; absent: every one."
    )


# A sync cursor: opaque to clients; every string of this shape is one a client may send (a
# schema-valid request is never refused as bad input), so it is a position, not a token. A
# position below the slot's compacted horizon is one the server no longer keeps: 410. `N`
# is an incremental client's; `N.w` a walk's (syncing from the start, it also reads the
# rows compaction carried forward, `wasp_worker.compaction`).
SYNC_WALK = ".w"
DATA_CURSOR_PATTERN = r"^[0-9]{1,18}(\.w)?$"
# A keyed listing's cursor (`wasp.data_api`): every string of this shape is a position.
KeyCursor = Annotated[str, StringConstraints(pattern=data_api.CURSOR_PATTERN)]
# A WhatsApp message id as the network hands them out.
WaMessageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
# Whom a contact is looked up by: a phone JID, a LID, or the phone's digits.
CONTACT_ID_PATTERN = r"^(\+?[0-9]{6,20}|[0-9]{1,25}(:[0-9]{1,3})?@(s\.whatsapp\.net|lid))$"
ContactId = Annotated[str, StringConstraints(pattern=CONTACT_ID_PATTERN, max_length=64)]
MAX_TIME = 1e11  # Unix time: past year 5000 a filter is a typo
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]


class ConversationFilters(BaseModel):
    """What a listing of conversations selects, and its order."""

    unread: bool | None = Field(
        None, description="true: only those with unread messages; false: only those without."
    )
    archived: bool | None = Field(None, description="Only archived ones (true) or others.")
    pinned: bool | None = Field(None, description="Only pinned ones (true) or others.")
    tag: Tag | None = Field(None, description="Only those with this tag.")
    q: str | None = Field(
        None, min_length=1, max_length=100, description="Only those whose name contains this."
    )
    sort: Literal["last", "unread", "name"] = Field(
        "last",
        description="last: latest message first; unread: most unread first, then latest; "
        "name: by name, nameless last.",
    )
    limit: int = Field(50, ge=1, le=500, description="Most conversations in one page.")


class ConversationsQuery(ConversationFilters):
    """Query of GET /api/accounts/{slot}/conversations."""

    cursor: KeyCursor | None = Field(
        None,
        description="`next_cursor` of the previous page (same sort): the page starts after "
        "that conversation's place; absent: the first page.",
    )


class ConversationPatch(BaseModel):
    """Body of PATCH /api/accounts/{slot}/conversations/{chat_id}: what it names is set,
    the rest kept. Pin, archive and mute are sent to WhatsApp too; tags stay on the shard."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    pinned: bool | SkipJsonSchema[None] = Field(None, description="Pinned.")
    archived: bool | SkipJsonSchema[None] = Field(None, description="Archived.")
    muted_until: float | None = Field(
        None,
        ge=0,
        le=1e11,
        allow_inf_nan=False,
        description="Muted until this Unix time; null: not muted.",
    )
    tags: Annotated[list[Tag], Field(max_length=32)] | SkipJsonSchema[None] = Field(
        None, description="The conversation's tags (at most 32), replacing its others."
    )

    @field_validator("pinned", "archived", "tags")
    @classmethod
    def _not_null(cls, value: object) -> object:
        """Absent keeps the setting; null would say nothing (only `muted_until` clears)."""
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class SyncQuery(BaseModel):
    """Query of GET /api/accounts/{slot}/sync."""

    since: str | None = Field(
        None,
        pattern=DATA_CURSOR_PATTERN,
        description="`next` of the previous answer; absent (or 0): from the start. `N.w` is "
        "a walk from the start under way (its pages include every live item once), `N` an "
        "incremental client's (only what changed after N). Below the slot's horizon (the "
        "change log compacted past it): 410, start again without it.",
    )
    limit: int = Field(500, ge=1, le=1000, description="Most changes in one answer.")


class MessagesQuery(BaseModel):
    """Query of GET /api/accounts/{slot}/conversations/{chat_id}/messages."""

    before: KeyCursor | None = Field(
        None,
        description="Only messages before this cursor (a page's `next_cursor`), newest first.",
    )
    after: KeyCursor | None = Field(
        None,
        description="Only messages after this cursor, oldest first (with `before` too: "
        "those between the two).",
    )
    limit: int = Field(50, ge=1, le=500, description="Most messages in one page.")


class SearchFilters(BaseModel):
    """What a full-text search selects, besides the text."""

    q: str = Field(
        min_length=1,
        max_length=100,  # with the other parameters, far inside a request line's 8 KiB
        description="Words to find (any case, accents ignored), all of them; the last may "
        "be the start of a word. Operators and punctuation are plain text.",
    )
    chat_id: Destination | None = Field(None, description="Only in this chat.")
    sender: Destination | None = Field(
        None, description="Only from this sender (phone JID, LID or number)."
    )
    since: float | None = Field(
        None, ge=0, le=MAX_TIME, allow_inf_nan=False, description="From this Unix time on."
    )
    until: float | None = Field(
        None, ge=0, le=MAX_TIME, allow_inf_nan=False, description="Before this Unix time."
    )
    type: str | None = Field(
        None, pattern=r"^[a-z_]{1,32}$", description="Only this message_type (text, image...)."
    )
    limit: int = Field(20, ge=1, le=100, description="Most hits in one page.")


class SearchQuery(SearchFilters):
    """Query of GET /api/accounts/{slot}/search."""

    cursor: KeyCursor | None = Field(
        None, description="`next_cursor` of the previous page; absent: the newest hits."
    )


class UnreadPage(BaseModel):
    """How many unread chats an unread summary lists."""

    limit: int = Field(50, ge=1, le=500, description="Most unread chats in one page.")


class UnreadQuery(UnreadPage):
    """Query of GET /api/accounts/{slot}/unread."""

    cursor: KeyCursor | None = Field(
        None,
        description="`next_cursor` of the previous page: the chats after that one's place; "
        "absent: the latest unread chat first.",
    )


class MarkReadRequest(BaseModel):
    """Body of POST /api/accounts/{slot}/markRead."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    chat_id: Destination
    message_ids: list[WaMessageId] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="Only these messages of the chat; absent or null: every unread one.",
    )


class ContactsLookup(BaseModel):
    """Body of POST /api/accounts/{slot}/contacts/lookup."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ids: list[ContactId] = Field(
        min_length=1, max_length=500, description="Phone JIDs, LIDs or phone digits."
    )


class SlotsRange(BaseModel):
    """The slots a range operation covers (clamped to the worker's own)."""

    model_config = ConfigDict(populate_by_name=True)

    slot_from: SlotId | None = Field(
        None, alias="from", description="First slot; absent: the worker's first."
    )
    slot_to: SlotId | None = Field(
        None, alias="to", description="Last slot; absent: the worker's last."
    )


class DataConversationsQuery(SlotsRange, ConversationFilters):
    """Query of GET /data/conversations."""

    after: KeyCursor | None = Field(
        None, description="Continue after this cursor (`next_cursor`); absent: the first page."
    )


class DataSearchQuery(SlotsRange, SearchFilters):
    """Query of GET /data/search."""

    after: KeyCursor | None = Field(
        None, description="Continue after this cursor (`next_cursor`); absent: the newest."
    )


class DataUnreadQuery(SlotsRange, UnreadPage):
    """Query of GET /data/unread."""

    after: KeyCursor | None = Field(
        None, description="Continue after this cursor (`next_cursor`); absent: the latest."
    )


# -- groups and contacts: operations WhatsApp answers (the session must be logged in) --------

# A group's JID: `<digits>@g.us` (old groups: `<creator>-<time>@g.us`).
GROUP_ID_PATTERN = r"^[0-9]{1,20}(-[0-9]{1,20})?@g\.us$"
GroupId = Annotated[str, StringConstraints(pattern=GROUP_ID_PATTERN)]
# A phone number (international digits, no + or leading 0), as a number check takes it.
PhoneNumber = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{6,19}$")]
# A WhatsApp user: a phone number (an optional +) or its phone JID.
USER_PATTERN = r"^\+?[1-9][0-9]{6,19}(@s\.whatsapp\.net)?$"
UserId = Annotated[str, StringConstraints(pattern=USER_PATTERN)]
GroupName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]*[^\s][^\x00-\x1f]*$"),
]
MAX_PARTICIPANTS = 256  # one call's participants: WhatsApp's group size is larger, a call's not
MAX_NUMBER_CHECK = 50


class CreateGroupRequest(BaseModel):
    """Body of POST /api/accounts/{slot}/groups."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: GroupName = Field(description="The group's name (subject).")
    participants: list[UserId] = Field(
        min_length=1,
        max_length=MAX_PARTICIPANTS,
        description="Who joins besides the account (numbers or phone JIDs); the account "
        "is the group's admin.",
    )


class RenameGroupRequest(BaseModel):
    """Body of PATCH /api/accounts/{slot}/groups/{group_id}."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: GroupName = Field(description="The group's new name (subject).")


class ParticipantsRequest(BaseModel):
    """Body of POST /api/accounts/{slot}/groups/{group_id}/participants."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    action: Literal["add", "remove", "promote", "demote"] = Field(
        description="add or remove members; promote to admin or demote from it."
    )
    participants: list[UserId] = Field(
        min_length=1, max_length=MAX_PARTICIPANTS, description="Numbers or phone JIDs."
    )


class InviteQuery(BaseModel):
    """Query of GET /api/accounts/{slot}/groups/{group_id}/invite."""

    revoke: bool = Field(False, description="true: the old link stops working, a new one is made.")


class NumbersCheck(BaseModel):
    """Body of POST /api/accounts/{slot}/contacts/check."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    numbers: list[PhoneNumber] = Field(
        min_length=1,
        max_length=MAX_NUMBER_CHECK,
        description="International numbers, digits only (at most 50 a call; each one counts "
        "against the account's pace of checks).",
    )


# SQLite's INTEGER is 64-bit signed: a larger id can name no row (and would not fit a query).
MessageId = Annotated[int, Field(ge=1, le=2**63 - 1)]
MediaName = Annotated[str, StringConstraints(pattern=MEDIA_NAME_PATTERN)]
# A message of a chat, as the actions on it name it.
MESSAGE_PARAMS = {"chat_id": Destination, "message_id": WaMessageId}


API = ApiInfo(
    title="wasp worker",
    description="One shard's WhatsApp sessions. Slot operations answer 409 "
    "for slots outside SLOT_FROM..SLOT_TO. Every error is JSON: {ok: false, error}; "
    "a documented path answers 405 (with Allow) for a method it does not take. "
    f"Only the master may call it: every operation but the probes (/health, /ready) needs "
    f"`{WORKER_TOKEN_HEADER}`, one of the worker's WORKER_TOKENS. Metrics are on their "
    "own port (METRICS_PORT), not this one.",
    reasons={
        200: "OK",
        202: "Accepted: stored on disk",
        400: "Bad input (the error says which); nothing changed",
        401: f"Missing or invalid {WORKER_TOKEN_HEADER}; nothing changed",
        404: "Not found: no such session, message, media or path",
        409: "Slot not in this worker, or the session's state does not allow it now",
        410: "Gone: a sync cursor older than the change log's horizon; start again without it",
        413: "Body too large",
        415: "A file of a type the message's kind does not take (the error lists them)",
        422: "A well-formed body the operation cannot take (not an emoji, not an option of "
        "the poll), or values that do not fit together (the error says why); nothing changed",
        429: "Worker capacity full, or the account's number checks are over their pace "
        "(Retry-After says when to try again)",
        501: "The session's backend cannot do this operation (the error names it)",
        503: "This worker does not hold its shard's lease (another may)",
    },
    security_schemes={
        "WorkerToken": {"type": "apiKey", "in": "header", "name": WORKER_TOKEN_HEADER},
    },
)
# Probes: kubelet and the operator call them without a credential.
OPEN = frozenset({"/health", "/ready"})
# Any slot operation: a bad slot, a slot another worker serves, a lease held elsewhere,
# and a path the router does not know (a slot that changes the path's shape).
SLOT_OPS = (400, 404, 409, 503)
WITH_BODY = (*SLOT_OPS, 413)
# An operation WhatsApp answers: the session's state may not allow it (409), and a backend
# may not do it (501).
SESSION_OPS = (*SLOT_OPS, 501)
# Queueing a message: a quoted message not in the store (404), a file over its kind's limit
# (413) or of a type it does not take (415), values that do not fit together (422), a kind
# the backend does not send (501).
SEND_ANSWERS = (200, 202, *WITH_BODY, 415, 422, 501)
_ENDPOINTS = [
    Endpoint("health", "GET", "/health", "Worker health: range, active and max sessions"),
    Endpoint(
        "ready",
        "GET",
        "/ready",
        "Readiness: 200 while this worker holds its shard's lease, 503 with the reason otherwise",
        responses=(200, 503),
    ),
    Endpoint(
        "logs",
        "GET",
        "/logs",
        "Recent log events (ring buffer), newest last",
        query=LogsQuery,
        responses=(200, 400),
    ),
    Endpoint(
        "events",
        "GET",
        "/events",
        "Live events after `after` (an event id `<epoch>.<seq>`), long-polling up to `wait` s; "
        "`gap` says events were dropped since",
        query=EventsQuery,
        responses=(200, 400),
    ),
    Endpoint(
        "connect",
        "POST",
        "/api/accounts/{slot}/connect",
        "Start the slot's session: CONNECTING with a QR, or CONNECTED from stored auth",
        responses=(200, *SLOT_OPS, 429),
    ),
    Endpoint(
        "open",
        "POST",
        "/api/accounts/{slot}/open",
        "Start the slot's session if needed (as connect) and list its chats",
        responses=(200, *SLOT_OPS, 429),
    ),
    Endpoint(
        "chats",
        "GET",
        "/api/accounts/{slot}/chats",
        "The slot's chats, latest first, with unread counts",
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "conversations",
        "GET",
        "/api/accounts/{slot}/conversations",
        "The slot's conversations, filtered and sorted, a page at a time (`next_cursor`)",
        query=ConversationsQuery,
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "updateConversation",
        "PATCH",
        "/api/accounts/{slot}/conversations/{chat_id}",
        "Pin, archive, mute or tag a conversation; pin, archive and mute are sent to WhatsApp "
        "(`whatsapp`: sent, pending (kept and sent when the session connects), failed or "
        "unsupported; null for tags only)",
        body=ConversationPatch,
        params={"chat_id": Destination},
        responses=(200, *WITH_BODY),
    ),
    Endpoint(
        "sync",
        "GET",
        "/api/accounts/{slot}/sync",
        "Messages and conversations changed since a cursor (`next` of the previous answer), "
        "each at its current state; the same cursor gives the same changes. 410: the cursor "
        "is older than the change log's horizon (compacted): start again without `since`",
        query=SyncQuery,
        responses=(200, *SLOT_OPS, 410),
    ),
    Endpoint(
        "conversation",
        "GET",
        "/api/accounts/{slot}/conversations/{chat_id}",
        "One conversation (404: the slot has none with this chat), and `pending`: which of "
        "its `pinned`, `archived` and `muted_until` set here WhatsApp does not have yet",
        params={"chat_id": Destination},
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "messages",
        "GET",
        "/api/accounts/{slot}/conversations/{chat_id}/messages",
        "A chat's messages a page at a time: newest first (older pages with `before`), "
        "or oldest first `after` a cursor; deleted ones as tombstones (`deleted_at`)",
        query=MessagesQuery,
        params={"chat_id": Destination},
        responses=(200, *SLOT_OPS),
    ),
    # Presence: what the account shows in a chat now (typing, recording), never queued.
    Endpoint(
        "setPresence",
        "POST",
        "/api/accounts/{slot}/conversations/{chat_id}/presence",
        "Show the account typing, recording a voice note, or neither (paused) in a chat, now "
        "(not queued: presence is ephemeral); 409 when the session is not connected",
        body=PresenceRequest,
        params={"chat_id": Destination},
        responses=(200, *SESSION_OPS, 413),
    ),
    Endpoint(
        "search",
        "GET",
        "/api/accounts/{slot}/search",
        "Full-text search of the slot's messages, newest first, each hit with a `snippet`",
        query=SearchQuery,
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "markRead",
        "POST",
        "/api/accounts/{slot}/markRead",
        "Mark a chat's messages read (these ids, or every unread one) and send WhatsApp "
        "read receipts (`read_receipts` says whether they went)",
        body=MarkReadRequest,
        responses=(200, *WITH_BODY),
    ),
    Endpoint(
        "unread",
        "GET",
        "/api/accounts/{slot}/unread",
        "Unread messages and conversations (muted and archived ones counted apart), and "
        "the unread chats, latest first, a page at a time (`next_cursor`)",
        query=UnreadQuery,
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "groups",
        "GET",
        "/api/accounts/{slot}/groups",
        "The groups the account is in, as WhatsApp lists them (needs a logged-in session)",
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "createGroup",
        "POST",
        "/api/accounts/{slot}/groups",
        "Create a group with these participants; the account is its admin",
        body=CreateGroupRequest,
        responses=(200, *SESSION_OPS, 413),
    ),
    Endpoint(
        "group",
        "GET",
        "/api/accounts/{slot}/groups/{group_id}",
        "A group's name, participants and admins (404: not a group the account is in)",
        params={"group_id": GroupId},
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "renameGroup",
        "PATCH",
        "/api/accounts/{slot}/groups/{group_id}",
        "Rename a group (409: the group lets only admins and the account is not one)",
        body=RenameGroupRequest,
        params={"group_id": GroupId},
        responses=(200, *SESSION_OPS, 413),
    ),
    Endpoint(
        "groupParticipants",
        "POST",
        "/api/accounts/{slot}/groups/{group_id}/participants",
        "Add, remove, promote or demote participants (the account must be an admin); "
        "the answer says what happened to each",
        body=ParticipantsRequest,
        params={"group_id": GroupId},
        responses=(200, *SESSION_OPS, 413),
    ),
    Endpoint(
        "groupInvite",
        "GET",
        "/api/accounts/{slot}/groups/{group_id}/invite",
        "The group's invite link; `revoke=true` replaces it with a new one (admins only)",
        query=InviteQuery,
        params={"group_id": GroupId},
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "leaveGroup",
        "POST",
        "/api/accounts/{slot}/groups/{group_id}/leave",
        "Leave a group",
        params={"group_id": GroupId},
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "contactsCheck",
        "POST",
        "/api/accounts/{slot}/contacts/check",
        "Which numbers are on WhatsApp; paced per account (bulk checks get accounts "
        "banned): over the pace, 429 with Retry-After and nothing checked",
        body=NumbersCheck,
        responses=(200, *SESSION_OPS, 413, 429),
    ),
    Endpoint(
        "contactPicture",
        "GET",
        "/api/accounts/{slot}/contacts/{jid}/picture",
        "A user's profile picture (URL and id; null: none, or hidden from the account)",
        params={"jid": UserId},
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "contactInfo",
        "GET",
        "/api/accounts/{slot}/contacts/{jid}/info",
        "What WhatsApp says of a user: about text, verified business name, devices",
        params={"jid": UserId},
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "blockContact",
        "POST",
        "/api/accounts/{slot}/contacts/{jid}/block",
        "Block a user: their messages no longer reach the account",
        params={"jid": UserId},
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "unblockContact",
        "POST",
        "/api/accounts/{slot}/contacts/{jid}/unblock",
        "Unblock a user",
        params={"jid": UserId},
        responses=(200, *SESSION_OPS),
    ),
    Endpoint(
        "contactsLookup",
        "POST",
        "/api/accounts/{slot}/contacts/lookup",
        "Contacts by phone JID, LID or phone digits: those found, and the ids not found",
        body=ContactsLookup,
        responses=(200, *WITH_BODY),
    ),  # before contacts/{jid}: the router takes the first path that matches
    Endpoint(
        "contact",
        "GET",
        "/api/accounts/{slot}/contacts/{jid}",
        "One contact by phone JID, LID or phone digits (404: unknown)",
        params={"jid": ContactId},
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "dataConversations",
        "GET",
        "/data/conversations",
        "Conversations of a range of this worker's slots, in one keyed order (for the "
        "master's view across shards)",
        query=DataConversationsQuery,
        responses=(200, 400),
    ),
    Endpoint(
        "dataSearch",
        "GET",
        "/data/search",
        "Full-text search across a range of this worker's slots, newest first",
        query=DataSearchQuery,
        responses=(200, 400),
    ),
    Endpoint(
        "dataUnread",
        "GET",
        "/data/unread",
        "Unread counts of a range of this worker's slots, per slot and summed, and their "
        "unread chats, latest first, a page at a time",
        query=DataUnreadQuery,
        responses=(200, 400),
    ),
    Endpoint(
        "dataStatus",
        "GET",
        "/data/status",
        "The shard database's counts, size on disk, last write and last change",
    ),
    Endpoint(
        "openChat",
        "POST",
        "/api/accounts/{slot}/openChat",
        "A chat's latest messages; marks them read",
        body=OpenChatRequest,
        responses=(200, *WITH_BODY),
    ),
    Endpoint(
        "status",
        "GET",
        "/api/accounts/{slot}/status",
        "The slot's session state and QR",
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "logout",
        "POST",
        "/api/accounts/{slot}/logout",
        "Unlink the device and wipe the session's auth",
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "destroy",
        "POST",
        "/api/accounts/{slot}/destroy",
        "Stop the session, keeping its auth",
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "scan",
        "POST",
        "/api/accounts/{slot}/scan",
        "Simulator only (404 elsewhere): log the slot in as if its QR was scanned",
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "send",
        "POST",
        "/api/accounts/{slot}/send",
        "Queue a message (durable before 202; 200 for a known `idempotency_key`)",
        body=SendRequest,
        form=UploadForm,
        responses=SEND_ANSWERS,
    ),
    Endpoint(
        "schedule",
        "POST",
        "/api/accounts/{slot}/schedule",
        "Queue a message for `send_at` (survives restarts)",
        body=ScheduleRequest,
        form=UploadForm,
        responses=SEND_ANSWERS,
    ),
    # Actions on a message of the slot's store: queued like a send, in the chat's lane.
    Endpoint(
        "react",
        "POST",
        "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}/reaction",
        'React to a message with one emoji ("" removes the reaction); queued like a send '
        "(202, or 200 for a known `idempotency_key`)",
        body=ReactionRequest,
        params=MESSAGE_PARAMS,
        responses=(200, 202, *WITH_BODY, 422, 501),
    ),
    Endpoint(
        "editMessage",
        "PATCH",
        "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}",
        "Edit the text of a message the account sent, within WhatsApp's 15 minutes (409 "
        "otherwise); queued like a send",
        body=EditRequest,
        params=MESSAGE_PARAMS,
        responses=(200, 202, *WITH_BODY, 501),
    ),
    Endpoint(
        "deleteMessage",
        "DELETE",
        "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}",
        "Delete a message for everyone: the account's own, or any in a group it is an admin "
        "of (409 otherwise); queued like a send, a second delete answers the first (200)",
        params=MESSAGE_PARAMS,
        responses=(200, 202, *SLOT_OPS, 501),
    ),
    Endpoint(
        "vote",
        "POST",
        "/api/accounts/{slot}/conversations/{chat_id}/messages/{message_id}/vote",
        "Vote in a poll with option names ([] withdraws the vote); queued like a send",
        body=VoteRequest,
        params=MESSAGE_PARAMS,
        responses=(200, 202, *WITH_BODY, 422, 501),
    ),
    Endpoint(
        "pair",
        "POST",
        "/api/accounts/{slot}/pair",
        "A pairing code for the phone (instead of the QR) while the slot is logging in",
        body=PairRequest,
        responses=(200, *WITH_BODY),
    ),
    Endpoint(
        "pacing",
        "GET",
        "/api/accounts/{slot}/pacing",
        "The account's sending pace: the one in force, and its own override (null: none)",
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "setPacing",
        "PUT",
        "/api/accounts/{slot}/pacing",
        "Set the account's own sending pace (kept on the shard's volume); what the body "
        "leaves out follows the shard's `pacing`, and `{}` clears the override",
        body=PacingOverride,
        responses=(200, *WITH_BODY),
    ),
    Endpoint(
        "media",
        "GET",
        "/api/accounts/{slot}/media/{name}",
        "Media of an inbound message (its `media_url`)",
        params={"name": MediaName},
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "message",
        "GET",
        "/api/accounts/{slot}/messages/{id}",
        "State of a queued message: queued (held by the pace, or waiting to be retried "
        "after `attempts` failures, the last one its reason), sent, or failed with a reason",
        params={"id": MessageId},
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "webhookDeadLetters",
        "GET",
        "/api/accounts/{slot}/webhooks/dead",
        "Webhook events of the slot that a receiver refused or that outlived the retry horizon",
        query=DeadLettersQuery,
        responses=(200, *SLOT_OPS),
    ),
    Endpoint(
        "webhookReplay",
        "POST",
        "/api/accounts/{slot}/webhooks/replay",
        "Send the slot's dead letters again (after its newer events; same event ids); "
        "re-enables their subscriptions",
        body=ReplayRequest,
        responses=(200, *WITH_BODY),
    ),
]
ENDPOINTS = [
    endpoint
    if endpoint.path in OPEN
    else replace(
        endpoint,
        security=("WorkerToken",),
        responses=tuple(sorted({*endpoint.responses, 401})),
    )
    for endpoint in _ENDPOINTS
]
"""Every operation; all but the probes need the master's token (`WorkerToken`)."""
