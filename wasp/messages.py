"""The bodies of POST /send and /schedule, and the grammar of a destination.

One source of truth, in the core because both APIs declare these bodies: the
worker validates requests with these models and queues what they describe, and
both OpenAPI documents (the worker's, the master's) are generated from the same
models, so a request the document calls valid is one the worker accepts.

A body is a union discriminated by `type` (left out: text): text, the media
kinds (image, video, document with a caption; audio, voice, sticker without),
location, contact and poll. Every kind may quote a message (`reply_to`) and
mention people (`mentions`). A media message carries exactly one of `media_url`
and `media_base64` (or its bytes come as a multipart upload). The schedule body
is the same union with `send_at` required.

What the document can say, the models check (a schema-valid body is never a 400).
What it cannot (a poll's `selectable_count` against its options' count) is
`problem()`, which the worker answers with 422; what needs the store (does the
quoted message exist) or the bytes (size, type) is the worker's.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

Body = TypeVar("Body")
MediaKind = Literal["image", "video", "audio", "document", "voice", "sticker"]
Captioned = Literal["image", "video", "document"]
Uncaptioned = Literal["audio", "voice", "sticker"]

# Phone digits (optional +), as WhatsApp numbers are written.
_DIGITS = r"\+?[0-9]{6,20}"
# Old group ids are `<creator phone>-<timestamp>`; new ones are 120363 followed by digits.
_GROUP = r"[0-9]{6,20}-[0-9]{6,20}|120363[0-9]{9,19}"
_JID = r"[0-9]{1,25}(?:-[0-9]{1,20})?@(?:s\.whatsapp\.net|g\.us|lid)"
# The same text is the JSON Schema pattern and the server's check (always a full match,
# so `$` never lets a trailing newline through, unlike Python's `re.match`).
DESTINATION = rf"^(?:{_JID}|{_GROUP}|{_DIGITS})$"
_DESTINATION_RE = re.compile(DESTINATION)
_JID_RE, _GROUP_RE = re.compile(_JID), re.compile(_GROUP)
DESTINATION_MAX = 64  # the longest JID the grammar allows is 63 characters
# The last second of year 9999: beyond it `send_at` is a typo, not a plan.
LATEST_SEND_AT = 253402300799.0


class DestinationError(ValueError):
    """The destination is not a phone number, group id or JID."""


def normalise(to: str) -> str:
    """Digits -> `<digits>@s.whatsapp.net`, group ids -> `@g.us`, JIDs kept."""
    text = to.strip()
    if not _DESTINATION_RE.fullmatch(text):
        raise DestinationError(
            f"invalid destination {to[:40]!r}: expected phone digits (6-20, an optional +), "
            "a group id or a JID"
        )
    if _JID_RE.fullmatch(text):
        return text
    if _GROUP_RE.fullmatch(text):
        return f"{text}@g.us"
    return f"{text.lstrip('+')}@s.whatsapp.net"


def _destination(value: str) -> str:
    if value != value.strip():  # the document's pattern allows no surrounding spaces
        raise ValueError(f"invalid destination {value[:40]!r}: surrounding whitespace")
    normalise(value)  # raises DestinationError (a ValueError) with the reason
    return value


Destination = Annotated[
    str,
    AfterValidator(_destination),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DESTINATION,
            "maxLength": DESTINATION_MAX,
            "description": "Phone digits (6-20, an optional +), a group id (`<digits>-<digits>` "
            "or `120363...`) or a JID (`...@s.whatsapp.net`, `@g.us`, `@lid`).",
        }
    ),
]
"""A chat or recipient: validated with `DESTINATION`, documented with it too."""


# A WhatsApp message id as the network hands them out (the one a reply quotes).
WA_MESSAGE_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
# Standard base64 with its padding, at least one byte: the document's check and the
# server's are this one pattern.
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"
MAX_MENTIONS = 50
MAX_POLL_OPTIONS = 12


def _unique(options: list[str]) -> list[str]:
    if len(set(options)) != len(options):
        raise ValueError("poll options must be unique")
    return options


class _Outgoing(BaseModel):
    """What every message has: where it goes, an optional retry key and time, the message
    it replies to and whom it mentions."""

    # Strict: JSON types as the document says them (`false` is no number, `0` no string).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    to: Destination
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="A retry with the same key returns the first message instead of a new one.",
    )
    send_at: float | None = Field(
        None,
        ge=0,
        le=LATEST_SEND_AT,
        allow_inf_nan=False,
        description="Unix time; absent: send now.",
    )
    reply_to: str | None = Field(
        None,
        pattern=WA_MESSAGE_ID,
        description="WhatsApp id of a message of chat `to` to quote (404 when this account's "
        "store has no such message in that chat).",
    )
    mentions: list[Destination] = Field(
        default_factory=list,
        max_length=MAX_MENTIONS,
        description="People mentioned (their numbers or JIDs; write `@<number>` in the text).",
    )

    @property
    def body(self) -> str | None:
        """The text the queue keeps in its `body` column (a caption, a text; None else)."""
        return None

    def problem(self) -> str | None:
        """What is wrong that the document cannot say (answered with 422); None: nothing."""
        return None


class TextMessage(_Outgoing):
    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=65536)
    link_preview: bool = Field(False, description="Show a preview of the text's first link.")

    @property
    def body(self) -> str | None:
        return self.text


class MediaMessage(_Outgoing):
    """Media from a URL, or its bytes in base64 (a multipart upload gives them as a file)."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["media_url"]}, {"required": ["media_base64"]}]}
    )

    type: MediaKind
    # Absent, never null (the document lists no null): `_one_source` refuses a null.
    media_url: (
        Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://")]
        | SkipJsonSchema[None]
    ) = Field(None, description="http(s) URL.")
    # No maxLength: the route's body limit bounds it (413), each kind's limit the bytes.
    media_base64: Annotated[str, StringConstraints(pattern=BASE64)] | SkipJsonSchema[None] = Field(
        None,
        description="The file's bytes, standard base64 (exactly one of this and `media_url`).",
    )
    mime: str | None = Field(
        None,
        max_length=127,
        pattern=r"^[a-z0-9.+-]+/[a-z0-9.+-]+$",
        description="MIME type; detected from the bytes where it can be.",
    )
    file_name: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        # By presence, as the document's `oneOf` says it.
        if isinstance(data, dict):
            given = [key for key in ("media_url", "media_base64") if key in data]
            if len(given) != 1:
                raise ValueError("exactly one of media_url and media_base64 is required")
            if data[given[0]] is None:
                raise ValueError(f"{given[0]} is null")
        return data


class CaptionedMedia(MediaMessage):
    type: Captioned
    text: str | None = Field(None, max_length=65536, description="Caption.")

    @property
    def body(self) -> str | None:
        return self.text


class UncaptionedMedia(MediaMessage):
    """Audio, a voice note (played as one) and a sticker: WhatsApp shows no caption."""

    type: Uncaptioned


class LocationMessage(_Outgoing):
    type: Literal["location"]
    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    name: str | None = Field(None, min_length=1, max_length=1024)
    address: str | None = Field(None, min_length=1, max_length=1024)


class ContactCard(BaseModel):
    """One person of a contact message; the worker writes the vCard."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
    phone: str = Field(pattern=r"^\+?[0-9]{6,20}$", description="Phone digits, an optional +.")


class ContactMessage(_Outgoing):
    type: Literal["contact"]
    contacts: list[ContactCard] = Field(min_length=1, max_length=10)


class PollMessage(_Outgoing):
    type: Literal["poll"]
    question: str = Field(min_length=1, max_length=255)
    options: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=100)]],
        AfterValidator(_unique),
        Field(min_length=2, max_length=MAX_POLL_OPTIONS, json_schema_extra={"uniqueItems": True}),
    ]
    selectable_count: int = Field(
        1, ge=1, le=MAX_POLL_OPTIONS, description="How many options a voter may choose."
    )

    @property
    def body(self) -> str | None:
        return self.question

    def problem(self) -> str | None:
        if self.selectable_count > len(self.options):
            return (
                f"selectable_count {self.selectable_count} is more than the "
                f"{len(self.options)} options"
            )
        return None


_AT = Field(ge=0, le=LATEST_SEND_AT, allow_inf_nan=False, description="Unix time.")


class ScheduledText(TextMessage):
    send_at: float = _AT


class ScheduledMedia(CaptionedMedia):
    send_at: float = _AT


class ScheduledUncaptioned(UncaptionedMedia):
    send_at: float = _AT


class ScheduledLocation(LocationMessage):
    send_at: float = _AT


class ScheduledContact(ContactMessage):
    send_at: float = _AT


class ScheduledPoll(PollMessage):
    send_at: float = _AT


Message = (
    TextMessage | CaptionedMedia | UncaptionedMedia | LocationMessage | ContactMessage | PollMessage
)
"""What the queue stores (a scheduled message is one of these, with `send_at`)."""


class _ByType(RootModel[Body], Generic[Body]):
    """A union of message models discriminated by `type`, which defaults to text."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _text_by_default(cls, data: Any) -> Any:
        # `type` was optional before the union existed; clients leaving it out mean text.
        if isinstance(data, dict) and "type" not in data:
            return {**data, "type": "text"}
        return data


class SendRequest(
    _ByType[
        Annotated[
            TextMessage
            | CaptionedMedia
            | UncaptionedMedia
            | LocationMessage
            | ContactMessage
            | PollMessage,
            Field(discriminator="type"),
        ]
    ]
):
    """Body of POST /api/accounts/{slot}/send."""


class ScheduleRequest(
    _ByType[
        Annotated[
            ScheduledText
            | ScheduledMedia
            | ScheduledUncaptioned
            | ScheduledLocation
            | ScheduledContact
            | ScheduledPoll,
            Field(discriminator="type"),
        ]
    ]
):
    """Body of POST /api/accounts/{slot}/schedule: `send_at` is required."""


class UploadForm(BaseModel):
    """The multipart/form-data body of /send and /schedule: a media message whose bytes come
    as a file (up to the kind's limit) instead of `media_url` or `media_base64`."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        description="The message as the JSON body would be, without `media_url` and "
        "`media_base64` (422 when it is not a media message).",
        json_schema_extra={"contentMediaType": "application/json"},
    )
    file: bytes = Field(description="The file's bytes.")
