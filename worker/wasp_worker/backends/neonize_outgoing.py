"""Each content kind as the WhatsApp message neonize sends, built with neonize's own
protobufs and builders.

What needs no connection is a pure function of the queued message (its kind, text and
`details`) and gives the protobuf `Message`, so tests check the real protobufs
offline: text, location, contact cards, and `decorate`, which adds what every kind may
carry (the quoted message of a reply and the mentioned JIDs, in ContextInfo). What needs
the session (media are uploaded by the builders, a poll gets its secret from the Go
core, a link preview fetches the page) goes through the client in `build`, then gets
`decorate`d the same way. The cell sends the result with `client.send_message(to, message)`.

A reply quotes from the shard's store (the queue puts it in `details`): the quoted
message's id (`stanzaID`), its sender (`participant`: the account's own JID for its own
messages) and a copy of its text as the quoted content.
"""

from __future__ import annotations

from typing import Any

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    ContactMessage,
    ContactsArrayMessage,
    ContextInfo,
    ExtendedTextMessage,
    LocationMessage,
    Message,
)
from neonize.utils.enum import VoteType

# The kinds `build` makes (the neonize backend's `sends`).
KINDS = (
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
)
# Message's fields that hold a kind's content (each has a `contextInfo`), in the order
# `decorate` looks for the one a message carries.
_CONTENT_FIELDS = (
    "extendedTextMessage",
    "imageMessage",
    "videoMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
    "locationMessage",
    "contactMessage",
    "contactsArrayMessage",
    "pollCreationMessage",
    "pollCreationMessageV2",
    "pollCreationMessageV3",
)


def context_info(details: dict[str, Any], own_jid: str | None = None) -> ContextInfo | None:
    """A reply's quote and the mentions, as WhatsApp reads them; None when there are neither."""
    mentions = list(details.get("mentions") or [])
    reply_to = details.get("reply_to")
    if not mentions and not reply_to:
        return None
    info = ContextInfo(mentionedJID=mentions)
    if reply_to:
        sender = own_jid if details.get("quoted_from_me") else details.get("quoted_sender")
        info.stanzaID = reply_to
        if sender:
            info.participant = sender
        info.quotedMessage.CopyFrom(Message(conversation=details.get("quoted_body") or ""))
    return info


def decorate(message: Message, details: dict[str, Any], own_jid: str | None = None) -> Message:
    """The message with its quote and mentions (a plain `conversation` text becomes an
    extended text, the only text that carries them)."""
    info = context_info(details, own_jid)
    if info is None:
        return message
    if message.HasField("conversation"):
        text = message.conversation
        message.ClearField("conversation")
        message.extendedTextMessage.text = text
    for name in _CONTENT_FIELDS:
        if message.HasField(name):
            getattr(message, name).contextInfo.MergeFrom(info)
            return message
    raise ValueError("the message carries no content a quote or a mention can go with")


def text_message(text: str) -> Message:
    return Message(extendedTextMessage=ExtendedTextMessage(text=text))


def location_message(details: dict[str, Any]) -> Message:
    place = details["location"]
    return Message(
        locationMessage=LocationMessage(
            degreesLatitude=place["latitude"],
            degreesLongitude=place["longitude"],
            name=place.get("name") or None,
            address=place.get("address") or None,
        )
    )


def contact_message(details: dict[str, Any]) -> Message:
    """One card as a ContactMessage; several as a ContactsArrayMessage (as the app sends)."""
    cards = [ContactMessage(displayName=c["name"], vcard=c["vcard"]) for c in details["contacts"]]
    if len(cards) == 1:
        return Message(contactMessage=cards[0])
    names = ", ".join(c["name"] for c in details["contacts"])
    return Message(contactsArrayMessage=ContactsArrayMessage(displayName=names, contacts=cards))


def pure(kind: str, text: str | None, details: dict[str, Any]) -> Message | None:
    """The kinds built without a session; None for the others."""
    if kind == "text" and not details.get("link_preview"):
        return text_message(text or "")
    if kind == "location":
        return location_message(details)
    if kind == "contact":
        return contact_message(details)
    return None


def set_selectable(message: Message, count: int) -> Message:
    """A poll's exact choice count (neonize's builder knows one or any)."""
    for name in ("pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3"):
        if message.HasField(name):
            getattr(message, name).selectableOptionsCount = count
    return message


def build(
    client: Any,
    kind: str,
    text: str | None,
    data: bytes | None,
    details: dict[str, Any],
    file_name: str | None = None,
    own_jid: str | None = None,
) -> Message:
    """The message of a queued `kind`, through the connected `client` where it must be."""
    message = pure(kind, text, details)
    if message is not None:
        return decorate(message, details, own_jid)
    mime = details.get("mime")
    if kind == "text":  # with a link preview: neonize's own preview of the first link
        message = text_message(text or "")
        preview = client._generate_link_preview(text or "")
        if preview is not None:
            message.extendedTextMessage.MergeFrom(preview)
    elif kind == "image":
        message = client.build_image_message(data, caption=text)
    elif kind == "video":
        message = client.build_video_message(data, caption=text)
    elif kind == "audio":
        message = client.build_audio_message(data)
    elif kind == "voice":  # push to talk: shown and played as a voice note
        message = client.build_audio_message(data, ptt=True)
    elif kind == "sticker":
        message = client.build_sticker_message(data, passthrough=True)
    elif kind == "document":
        message = client.build_document_message(
            data, caption=text, filename=file_name, mimetype=mime
        )
    elif kind == "poll":
        poll = details["poll"]
        count = int(poll["selectable_count"])
        vote = VoteType.SINGLE if count == 1 else VoteType.MULTIPLE
        message = set_selectable(
            client.build_poll_vote_creation(poll["question"], poll["options"], vote), count
        )
    else:
        raise ValueError(f"no builder for {kind}")
    return decorate(message, details, own_jid)
