"""Translation of neonize's own event objects into the cell protocol's events.

Pure and duck-typed (no neonize import), so it runs in the cell on real
events and in tests on neonize protobuf objects built offline. Never logs.
`TRANSLATORS` names the neonize event classes the cell subscribes to; inbound
messages go through `inbound_fields` instead, since the cell fetches their media.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wasp_worker.backends.cell_protocol import (
    ClientOutdated,
    Connected,
    ConnectFailure,
    Disconnected,
    InboundFields,
    KeepAliveRestored,
    KeepAliveTimeout,
    LoggedOut,
    Receipt,
    ReceiptState,
    SessionEvent,
    StreamError,
    StreamReplaced,
    TemporaryBan,
    Undecryptable,
)

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


def inbound_fields(slot: str, me: str, event: Any) -> InboundFields | None:
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
    timestamp = _seconds(info.Timestamp)
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


def _seconds(timestamp: int) -> int:
    timestamp = int(timestamp)
    return timestamp // 1000 if timestamp > 10**12 else timestamp  # some come in milliseconds


# whatsmeow's numbers for neonize's renumbered enums (types/events in whatsmeow).
CONNECT_FAILURE_CODES = {
    "GENERIC": 400,
    "LOGGED_OUT": 401,
    "TEMP_BANNED": 402,
    "MAIN_DEVICE_GONE": 403,
    "CLIENT_OUTDATED": 405,
    "UNKNOWN_LOGOUT": 406,
    "BAD_USER_AGENT": 409,
    "INTERNAL_SERVER_ERROR": 500,
    "EXPERIMENTAL": 501,
    "SERVICE_UNAVAILABLE": 503,
}
TEMP_BAN_CODES = {
    "SEND_TO_TOO_MANY_PEOPLE": 101,
    "BLOCKED_BY_USERS": 102,
    "CREATED_TOO_MANY_GROUPS": 103,
    "SENT_TOO_MANY_SAME_MESSAGE": 104,
    "BROADCAST_LIST": 106,
}
# The receipts of a recipient's device about our messages; the rest (sender, read-self,
# played-self: our own devices; retry, inactive, ...) say nothing about delivery.
RECEIPT_STATES: dict[str, ReceiptState] = {
    "DELIVERED": "delivered",
    "READ": "read",
    "PLAYED": "played",
}


def _enum(event: Any, field: str) -> str | None:
    """The name of an enum field's value, or None when neonize left it unset (a value
    its encoder does not know)."""
    if not event.HasField(field):
        return None
    values = event.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number
    value = values.get(getattr(event, field))
    return value.name if value is not None else None


def logged_out(slot: str, event: Any) -> LoggedOut:
    name = _enum(event, "Reason")
    code = CONNECT_FAILURE_CODES.get(name) if name else None
    return LoggedOut(slot, bool(event.OnConnect), code, name)


def temporary_ban(slot: str, event: Any) -> TemporaryBan:
    name = _enum(event, "Code")
    code = TEMP_BAN_CODES.get(name) if name else None
    return TemporaryBan(slot, code, name, max(int(event.Expire), 0))


def connect_failure(slot: str, event: Any) -> ConnectFailure:
    name = _enum(event, "Reason")
    code = CONNECT_FAILURE_CODES.get(name) if name else None
    return ConnectFailure(slot, code, name, event.Message)


def keepalive_timeout(slot: str, event: Any) -> KeepAliveTimeout:
    return KeepAliveTimeout(slot, int(event.ErrorCount), _seconds(event.LastSuccess))


def stream_error(slot: str, event: Any) -> StreamError:
    return StreamError(slot, event.Code)


def undecryptable(slot: str, event: Any) -> Undecryptable:
    return Undecryptable(slot, bool(event.IsUnavailable))


def receipt(slot: str, event: Any) -> Receipt | None:
    """A Receipt for messages this account sent, or None. whatsmeow marks the receipts of
    our own other devices IsFromMe (they read something we received, or got our copy)."""
    source = event.MessageSource
    name = _enum(event, "Type")
    state = RECEIPT_STATES.get(name) if name else None
    if source.IsFromMe or state is None or not event.MessageIDs:
        return None
    return Receipt(
        slot, jid_text(source.Chat), tuple(event.MessageIDs), state, _seconds(event.Timestamp)
    )


TRANSLATORS: dict[str, Callable[[str, Any], SessionEvent | None]] = {
    "ConnectedEv": lambda slot, _: Connected(slot),
    "DisconnectedEv": lambda slot, _: Disconnected(slot),
    "LoggedOutEv": logged_out,
    "StreamReplacedEv": lambda slot, _: StreamReplaced(slot),
    "TemporaryBanEv": temporary_ban,
    "ConnectFailureEv": connect_failure,
    "ClientOutdatedEv": lambda slot, _: ClientOutdated(slot),
    "KeepAliveTimeoutEv": keepalive_timeout,
    "KeepAliveRestoredEv": lambda slot, _: KeepAliveRestored(slot),
    "StreamErrorEv": stream_error,
    "UndecryptableMessageEv": undecryptable,
    "ReceiptEv": receipt,
}
"""neonize.events class name -> its translation, for the cell to subscribe to."""
