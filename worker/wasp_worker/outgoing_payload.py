"""What a queued message says beyond its text and media URL: the queue row's `payload`.

One JSON object per row (`Outbound.details`), only the keys a message has: `reply_to`
with what a backend needs to quote it (`quoted_sender`, `quoted_from_me`,
`quoted_body`, `quoted_type`, from the shard's store), `mentions` (JIDs),
`link_preview`, an uploaded file (`file`: its sha256 name under `outgoing/`,
`mime`, `file_size`), `location`, `contacts` (each with the vCard the worker wrote)
and `poll`. `history_payload` is the part the history keeps with the sent message.
"""

from __future__ import annotations

from typing import Any

from wasp.messages import (
    ContactCard,
    ContactMessage,
    LocationMessage,
    MediaMessage,
    Message,
    PollMessage,
    TextMessage,
    normalise,
)

# The keys of a message's content the history keeps (`messages.payload`), as received ones.
HISTORY_KEYS = ("mentions", "location", "contacts", "poll")


def _escape(text: str) -> str:
    """A vCard 3.0 text value: backslash, comma and semicolon escaped."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")


def vcard(card: ContactCard) -> str:
    """The vCard WhatsApp shows as a contact (`waid` makes its number tappable in the app)."""
    digits = card.phone.lstrip("+")
    return (
        "BEGIN:VCARD\nVERSION:3.0\n"
        f"FN:{_escape(card.name)}\n"
        f"TEL;type=CELL;waid={digits}:+{digits}\n"
        "END:VCARD"
    )


def content(message: Message) -> dict[str, Any]:
    """The message's own content beyond body and URL (no store, no file: those the queue adds)."""
    details: dict[str, Any] = {}
    if message.mentions:
        details["mentions"] = [normalise(m) for m in message.mentions]
    if isinstance(message, TextMessage) and message.link_preview:
        details["link_preview"] = True
    if isinstance(message, MediaMessage) and message.mime:
        details["mime"] = message.mime
    if isinstance(message, LocationMessage):
        details["location"] = {
            "latitude": message.latitude,
            "longitude": message.longitude,
            "name": message.name,
            "address": message.address,
        }
    if isinstance(message, ContactMessage):
        details["contacts"] = [
            {"name": c.name, "phone": c.phone, "vcard": vcard(c)} for c in message.contacts
        ]
    if isinstance(message, PollMessage):
        details["poll"] = {
            "question": message.question,
            "options": list(message.options),
            "selectable_count": message.selectable_count,
        }
    return details


def history_payload(details: dict[str, Any]) -> dict[str, Any]:
    return {key: details[key] for key in HISTORY_KEYS if details.get(key)}
