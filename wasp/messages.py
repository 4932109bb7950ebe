"""The bodies of POST /send and /schedule, and the grammar of a destination.

One source of truth, in the core because both APIs declare these bodies: the
worker validates requests with these models and queues what they describe, and
both OpenAPI documents (the worker's, the master's) are generated from the same
models, so a request the document calls valid is one the worker accepts.

A body is a union discriminated by `type`: a text message needs `text`, a media
message (image, video, audio, document) needs `media_url`; `type` may be left
out for text. The schedule body is the same union with `send_at` required.
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
    WithJsonSchema,
    model_validator,
)

Body = TypeVar("Body")
MediaKind = Literal["image", "video", "audio", "document"]

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


class _Outgoing(BaseModel):
    """What every message has: where it goes, an optional retry key and time."""

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


class TextMessage(_Outgoing):
    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=65536)


class MediaMessage(_Outgoing):
    type: MediaKind
    media_url: str = Field(max_length=2048, pattern=r"^https?://", description="http(s) URL.")
    text: str | None = Field(None, max_length=65536, description="Caption.")
    file_name: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")


class ScheduledText(TextMessage):
    send_at: float = Field(ge=0, le=LATEST_SEND_AT, allow_inf_nan=False, description="Unix time.")


class ScheduledMedia(MediaMessage):
    send_at: float = Field(ge=0, le=LATEST_SEND_AT, allow_inf_nan=False, description="Unix time.")


Message = TextMessage | MediaMessage
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


class SendRequest(_ByType[Annotated[TextMessage | MediaMessage, Field(discriminator="type")]]):
    """Body of POST /api/accounts/{slot}/send."""


class ScheduleRequest(
    _ByType[Annotated[ScheduledText | ScheduledMedia, Field(discriminator="type")]]
):
    """Body of POST /api/accounts/{slot}/schedule: `send_at` is required."""
