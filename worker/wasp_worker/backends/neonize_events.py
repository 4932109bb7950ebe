"""Translation of neonize's own event objects into the cell protocol's events.

Pure and duck-typed (no neonize import), so it runs in the cell on real
events and in tests on neonize protobuf objects built offline. Never logs.
`TRANSLATORS` names the neonize event classes the cell subscribes to; inbound
messages go through `message_change` (an edit or a delete for everyone) and
`inbound_fields` instead, since the cell fetches their media.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wasp_worker.backends.cell_protocol import (
    ChatSetting,
    ClientOutdated,
    Connected,
    ConnectFailure,
    Disconnected,
    HistoryChat,
    HistoryContact,
    HistorySynced,
    InboundFields,
    KeepAliveRestored,
    KeepAliveTimeout,
    LoggedOut,
    MessageEdited,
    MessageRevoked,
    OfflineSyncCompleted,
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


Content = tuple[str, str | None, str | None, str | None, int | None]
"""(text, media type, mime type, file name, file size) of a message's content."""


def content(message: Any) -> Content | None:
    """What a waE2E.Message says, or None when it has neither text nor media (a protocol
    message, a reaction, a stub)."""
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
    return text, media_type, mime, file_name, file_size


def inbound_fields(slot: str, me: str, event: Any) -> InboundFields | None:
    """The inbound event's fields for a MessageEv, or None for an empty message without media."""
    info, message = event.Info, event.Message
    source = info.MessageSource
    found = content(message)
    if found is None:
        return None
    text, media_type, mime, file_name, file_size = found
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


def message_change(slot: str, event: Any) -> MessageEdited | MessageRevoked | None:
    """An edit or a delete for everyone carried by a MessageEv, else None.

    Both are ProtocolMessages naming the changed message by its key; an edit may also
    come inside the `editedMessage` wrapper (whatsmeow unwraps it only on some paths).
    The chat is the envelope's, never the key's: a peer can only touch its own chat. In
    a direct chat the key must name the sender's own message (`fromMe` from the
    sender's side), so nobody edits or deletes what this account sent; a group admin
    may delete anyone's message, but only a sender edits.
    """
    info, message = event.Info, event.Message
    if _has(message, "editedMessage") and _has(message.editedMessage, "message"):
        message = message.editedMessage.message
    if not _has(message, "protocolMessage"):
        return None
    protocol = message.protocolMessage
    kind = _enum(protocol, "type")
    source = info.MessageSource
    chat, target = jid_text(source.Chat), protocol.key.ID
    if kind not in ("REVOKE", "MESSAGE_EDIT") or not chat or not target:
        return None
    own = protocol.key.fromMe if _has(protocol.key, "fromMe") else True
    if kind == "REVOKE":
        if not own and not source.IsGroup:
            return None
        return MessageRevoked(slot, chat, target, _seconds(info.Timestamp))
    edited = content(protocol.editedMessage) if _has(protocol, "editedMessage") else None
    if not own or edited is None:
        return None
    at = int(protocol.timestampMS) // 1000 if protocol.timestampMS else _seconds(info.Timestamp)
    return MessageEdited(slot, chat, target, edited[0], at)


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


# -- history sync and chat settings ---------------------------------------------

# whatsmeow's `store.MutedForever` (9999-12-31T23:59:59Z): a chat muted with no end.
MUTED_FOREVER = 253_402_300_799
_SKIPPED_CHATS = ("status@broadcast",)  # stories, not a conversation


def muted_until(value: float, now: float) -> float | None:
    """A mute's end as Unix seconds (milliseconds accepted), None when not muted now;
    WhatsApp's -1 is "forever" (in an unsigned field, 2^64 - 1)."""
    if value < 0 or value >= 2**63:
        return float(MUTED_FOREVER)
    end = float(_seconds(int(value)))
    return min(end, float(MUTED_FOREVER)) if end > now else None


def history_sync(slot: str, me: str, event: Any, now: float) -> HistorySynced | None:
    """A HistorySyncEv's messages, chats and contacts; None when it has none (a sync of
    another kind: settings, stickers, call logs).

    A message is read unless it is one of the chat's `unreadCount` newest inbound ones.
    Messages without text or media (system stubs, protocol messages, reactions) are left
    out, and so are the messages WhatsApp kept only as a revoked stub.
    """
    data = event.Data
    messages: list[dict[str, Any]] = []
    chats: list[HistoryChat] = []
    contacts: dict[str, HistoryContact] = {}
    for conversation in data.conversations:
        chat_id = conversation.ID
        if not chat_id or chat_id in _SKIPPED_CHATS:
            continue
        group = chat_id.endswith("@g.us")
        found = [
            fields
            for item in conversation.messages
            if (fields := _history_message(slot, me, chat_id, group, item.message)) is not None
        ]
        found.sort(key=lambda fields: fields["timestamp"])
        unread = int(conversation.unreadCount)
        inbound = [fields for fields in found if not fields["from_me"]]
        for position, fields in enumerate(reversed(inbound)):
            fields["read"] = position >= unread
        messages.extend(found)
        chats.append(
            {
                "chat_id": chat_id,
                "name": conversation.name or conversation.displayName or None,
                "pinned": bool(conversation.pinned),  # the time it was pinned, 0: not
                "archived": bool(conversation.archived),
                "muted_until": muted_until(int(conversation.muteEndTime), now)
                if conversation.muteEndTime
                else None,
                "unread": unread,
            }
        )
        lid = conversation.lidJID or (chat_id if chat_id.endswith("@lid") else "")
        phone = conversation.pnJID or (chat_id if chat_id.endswith("@s.whatsapp.net") else "")
        if not group and lid and phone:
            contacts[phone] = {"phone_jid": phone, "lid": lid, "name": None, "push_name": None}
    for mapping in data.phoneNumberToLidMappings:
        if mapping.pnJID and mapping.lidJID:
            contacts.setdefault(
                mapping.pnJID,
                {
                    "phone_jid": mapping.pnJID,
                    "lid": mapping.lidJID,
                    "name": None,
                    "push_name": None,
                },
            )
    for entry in data.pushnames:
        if not entry.ID or not entry.pushname:
            continue
        known = contacts.get(entry.ID) or next(
            (c for c in contacts.values() if c["lid"] == entry.ID), None
        )
        if known is not None:
            known["push_name"] = entry.pushname
            continue
        lid_jid, phone_jid = _identities(entry.ID, "")
        if lid_jid or phone_jid:
            contacts[entry.ID] = {
                "phone_jid": phone_jid,
                "lid": lid_jid,
                "name": None,
                "push_name": entry.pushname,
            }
    if not messages and not chats and not contacts:
        return None
    return HistorySynced(slot, tuple(messages), tuple(chats), tuple(contacts.values()))


def _history_message(
    slot: str, me: str, chat_id: str, group: bool, info: Any
) -> dict[str, Any] | None:
    """One WebMessageInfo of a history sync as the inbound event's fields, or None."""
    key = info.key
    if not key.ID or not _has(info, "message"):
        return None
    found = content(info.message)
    if found is None:
        return None
    text, media_type, mime, file_name, file_size = found
    from_me = bool(key.fromMe)
    if from_me:
        sender = me
    elif group:
        sender = info.participant or key.participant
    else:
        sender = chat_id
    if not sender:
        return None
    lid, phone = _identities(sender, "")
    return {
        "slot": slot,
        "from": sender.partition("@")[0],
        "to": chat_id if from_me else me,
        "body": text,
        "chat_id": chat_id,
        "chat_type": "group" if group else "direct",
        "sender_jid_raw": sender,
        "push_name": (info.pushName or None) if not from_me else None,
        "wa_message_id": key.ID,
        "timestamp": _seconds(info.messageTimestamp),
        "media_type": media_type,
        "media_url": None,  # history media is not fetched: WhatsApp's links expire
        "mime_type": mime,
        "file_name": file_name,
        "file_size": file_size,
        "from_me": from_me,
        "sender_lid": lid,
        "sender_phone_jid": phone,
        "read": True,
    }


def chat_setting(chat_id: str, settings: Any, now: float) -> ChatSetting | None:
    """whatsmeow's LocalChatSettings for a chat, None when its store has no record (then
    nothing is known, which is not "unpinned")."""
    if not settings.Found:
        return None
    return ChatSetting(
        chat_id,
        bool(settings.Pinned),
        bool(settings.Archived),
        muted_until(settings.MutedUntil, now) if settings.MutedUntil > 0 else None,
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
    "OfflineSyncCompletedEv": lambda slot, _: OfflineSyncCompleted(slot),
}
"""neonize.events class name -> its translation, for the cell to subscribe to."""
