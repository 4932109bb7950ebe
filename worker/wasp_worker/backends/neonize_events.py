"""Translation of neonize's own event objects into wasp's inbound message shape.

Pure and duck-typed (no neonize import), so it runs in the cell on real
events and in tests on neonize protobuf objects built offline. Never logs.
"""

from __future__ import annotations

from typing import Any

MEDIA_FIELDS = {
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}


def jid_text(jid: Any) -> str:
    return f"{jid.User}@{jid.Server}" if jid is not None and jid.User else ""


def _has(message: Any, name: str) -> bool:
    try:
        return bool(message.HasField(name))
    except ValueError:
        return False


def inbound_fields(slot: str, me: str, event: Any) -> dict[str, Any] | None:
    """The inbound event's fields for a MessageEv, or None for an empty message without media."""
    info, message = event.Info, event.Message
    source = info.MessageSource
    text = message.conversation or (
        message.extendedTextMessage.text if _has(message, "extendedTextMessage") else ""
    )
    media_type = mime = file_name = None
    file_size: int | None = None
    for field, kind in MEDIA_FIELDS.items():
        if _has(message, field):
            media = getattr(message, field)
            media_type, mime = kind, media.mimetype or None
            file_size = int(media.fileLength) if media.fileLength else None
            if kind == "document":
                file_name = media.fileName or None
            text = text or getattr(media, "caption", "") or ""
            break
    if not text and media_type is None:
        return None
    timestamp = int(info.Timestamp)
    if timestamp > 10**12:  # neonize reports milliseconds
        timestamp //= 1000
    sender = jid_text(source.Sender)
    lid, phone = _identities(sender, jid_text(source.SenderAlt))
    # Sent from the account's own phone (or another linked device): outbound, to the chat.
    from_me = bool(source.IsFromMe)
    return {
        "slot": slot,
        "from": source.Sender.User,
        "to": jid_text(source.Chat) if from_me else me,
        "body": text,
        "chat_id": jid_text(source.Chat),
        "chat_type": "group" if source.IsGroup else "direct",
        "sender_jid_raw": sender,
        "push_name": info.Pushname or None,
        "wa_message_id": info.ID,
        "timestamp": timestamp,
        "media_type": media_type,
        "media_url": None,
        "mime_type": mime,
        "file_name": file_name,
        "file_size": file_size,
        "from_me": from_me,
        "sender_lid": lid,
        "sender_phone_jid": phone,
    }


def _identities(sender: str, alternate: str) -> tuple[str | None, str | None]:
    """The sender's LID and phone JID, where WhatsApp gives them: a message from a LID
    carries the phone number as its alternate sender, and the other way round."""
    found = [jid for jid in (sender, alternate) if jid]
    lid = next((jid for jid in found if jid.endswith("@lid")), None)
    phone = next((jid for jid in found if jid.endswith("@s.whatsapp.net")), None)
    return lid, phone
