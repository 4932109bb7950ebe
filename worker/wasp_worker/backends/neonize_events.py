"""Translation of neonize's own event objects into the cell protocol's events.

Pure and duck-typed (no neonize import), so it runs in the cell on real
events and in tests on neonize protobuf objects built offline. Never logs.
`TRANSLATORS` names the neonize event classes the cell subscribes to (chat
presence and presence among them); inbound messages go through `message_change`
(an edit or a delete for everyone), `reaction`, `poll_update` (once the cell
decrypted the vote) and `inbound_fields` instead, since the cell fetches media
and decrypts votes.

Every kind of message WhatsApp sends is told apart (`message_type`): text,
image, video, audio, voice (an audio message with `PTT`), document, sticker,
location (live ones too), contact (one card or an array), poll (creation
messages v1, v2, v3 and later of the same shape); with its reply context (the
quoted message's id, `ContextInfo.stanzaID`) and mentions (`mentionedJID`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from wasp_worker.backends.base import SeenPresence
from wasp_worker.backends.cell_protocol import (
    ChatSetting,
    ClientOutdated,
    Connected,
    ConnectFailure,
    ContactCard,
    Disconnected,
    HistoryChat,
    HistoryContact,
    HistorySynced,
    InboundFields,
    KeepAliveRestored,
    KeepAliveTimeout,
    Location,
    LoggedOut,
    MessageEdited,
    MessageRevoked,
    MessageType,
    OfflineSyncCompleted,
    Poll,
    PollUpdate,
    PresenceSeen,
    Reaction,
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
LOCATION_FIELDS = ("locationMessage", "liveLocationMessage")
CONTACT_FIELDS = ("contactMessage", "contactsArrayMessage")
# Poll creation messages: v2 and v3 (single choice) and the later ones share v1's shape.
POLL_FIELDS = (
    "pollCreationMessage",
    "pollCreationMessageV2",
    "pollCreationMessageV3",
    "pollCreationMessageV5",
    "pollCreationMessageV6",
)
# Where a reply's context may be: the message field that holds the content.
CONTEXT_FIELDS = ("extendedTextMessage", *MEDIA_FIELDS, *LOCATION_FIELDS, *CONTACT_FIELDS)
CONTEXT_FIELDS += POLL_FIELDS


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
    """What a waE2E.Message says, or None when it is no message of its own (a protocol
    message, a reaction, a poll vote, a stub). A location's text is its name (a live
    location's caption), a contact card's its name(s), a poll's its question: what a
    search finds them by."""
    text = message.conversation or (
        message.extendedTextMessage.text if _has(message, "extendedTextMessage") else ""
    )
    media_type = mime = file_name = None
    file_size: int | None = None
    for field, kind in MEDIA_FIELDS.items():
        if _has(message, field):
            media = getattr(message, field)
            media_type, mime = kind, media.mimetype or None
            if kind == "audio" and media.PTT:
                media_type = "voice"
            file_size = int(media.fileLength) if media.fileLength else None
            if kind == "document":
                file_name = media.fileName or None
            text = text or getattr(media, "caption", "") or ""
            break
    if not text and media_type is None:
        special = _special_text(message)
        if special is None:
            return None
        text = special
    return text, media_type, mime, file_name, file_size


def _special_text(message: Any) -> str | None:
    """The text of a location, contact card or poll; None when the message is none."""
    if _has(message, "locationMessage"):
        found = message.locationMessage
        return str(found.name or found.address or found.comment or "")
    if _has(message, "liveLocationMessage"):
        return str(message.liveLocationMessage.caption or "")
    if _has(message, "contactMessage"):
        return str(message.contactMessage.displayName or "")
    if _has(message, "contactsArrayMessage"):
        cards = message.contactsArrayMessage
        return str(cards.displayName or ", ".join(c.displayName for c in cards.contacts if c))
    for field in POLL_FIELDS:
        if _has(message, field):
            return str(getattr(message, field).name or "")
    return None


def _context(message: Any) -> Any | None:
    """The ContextInfo of the message's content, when it has one."""
    for field in CONTEXT_FIELDS:
        if _has(message, field):
            inner = getattr(message, field)
            return inner.contextInfo if _has(inner, "contextInfo") else None
    return None


_WAID = re.compile(r"waid=\+?([0-9]{5,20})")
_TEL = re.compile(r"^TEL[^:\r\n]*:([+0-9 ().-]{5,40})$", re.MULTILINE)


def vcard_phone(vcard: str) -> str | None:
    """The first number of a vCard, digits only: its WhatsApp id (`waid`), else its TEL."""
    found = _WAID.search(vcard)
    if found:
        return found.group(1)
    tel = _TEL.search(vcard)
    digits = re.sub(r"[^0-9]", "", tel.group(1)) if tel else ""
    return digits or None


def _card(contact: Any) -> ContactCard:
    return {
        "name": contact.displayName or "",
        "vcard": contact.vcard or "",
        "phone": vcard_phone(contact.vcard or ""),
    }


def kind_fields(message: Any) -> dict[str, Any]:
    """The inbound fields of a message's kind: `message_type`, `quoted_id`, `mentions`,
    `location`, `contacts`, `poll` (None when the message is not of that kind)."""
    message_type: MessageType = "text"
    location: Location | None = None
    contacts: list[ContactCard] | None = None
    poll: Poll | None = None
    found = content(message)
    if found is not None and found[1] is not None:
        message_type = found[1]  # type: ignore[assignment]  # a MEDIA_FIELDS kind or voice
    elif _has(message, "locationMessage"):
        at = message.locationMessage
        message_type = "location"
        location = {
            "latitude": float(at.degreesLatitude),
            "longitude": float(at.degreesLongitude),
            "name": at.name or None,
            "address": at.address or None,
        }
    elif _has(message, "liveLocationMessage"):
        at = message.liveLocationMessage
        message_type = "location"
        location = {
            "latitude": float(at.degreesLatitude),
            "longitude": float(at.degreesLongitude),
            "name": None,
            "address": None,
        }
    elif _has(message, "contactMessage"):
        message_type, contacts = "contact", [_card(message.contactMessage)]
    elif _has(message, "contactsArrayMessage"):
        message_type = "contact"
        contacts = [_card(card) for card in message.contactsArrayMessage.contacts]
    else:
        for field in POLL_FIELDS:
            if _has(message, field):
                created = getattr(message, field)
                message_type = "poll"
                poll = {
                    "question": created.name,
                    "options": [option.optionName for option in created.options],
                    "selectable_count": int(created.selectableOptionsCount),
                }
                break
    context = _context(message)
    return {
        "message_type": message_type,
        "quoted_id": (context.stanzaID or None) if context is not None else None,
        "mentions": list(context.mentionedJID) if context is not None else [],
        "location": location,
        "contacts": contacts,
        "poll": poll,
    }


def _sender_time(millis: int, info: Any) -> float:
    """When the sender acted (its own clock, milliseconds), else when the server had it."""
    return int(millis) / 1000 if millis else float(_seconds(info.Timestamp))


def reaction(slot: str, event: Any) -> Reaction | None:
    """A reaction carried by a MessageEv (empty text: the reaction was removed), else None.
    The chat is the envelope's; the reactor is the sender (the account itself when
    `from_me`: its phone or another linked device)."""
    info, message = event.Info, event.Message
    if not _has(message, "reactionMessage"):
        return None
    reacted = message.reactionMessage
    source = info.MessageSource
    chat, target, reactor = jid_text(source.Chat), reacted.key.ID, jid_text(source.Sender)
    if not chat or not target or not reactor:
        return None
    at = _sender_time(reacted.senderTimestampMS, info)
    return Reaction(slot, chat, target, reactor, reacted.text, bool(source.IsFromMe), at)


def is_poll_vote(event: Any) -> bool:
    """Whether a MessageEv is a poll vote (encrypted: the cell decrypts it with the poll's
    secret, `client.decrypt_poll_vote`, before `poll_update`)."""
    return _has(event.Message, "pollUpdateMessage")


def poll_update(slot: str, event: Any, selected: Any) -> PollUpdate | None:
    """A poll vote from its MessageEv and the decrypted choice (a PollVoteMessage's
    `selectedOptions`: SHA-256 digests of the chosen options' names); none chosen: the
    vote was withdrawn."""
    info = event.Info
    update = event.Message.pollUpdateMessage
    source = info.MessageSource
    chat, poll_id, voter = jid_text(source.Chat), update.pollCreationMessageKey.ID, ""
    voter = jid_text(source.Sender)
    if not chat or not poll_id or not voter:
        return None
    hashes = tuple(bytes(digest).hex() for digest in selected)
    return PollUpdate(
        slot, chat, poll_id, voter, hashes, _sender_time(update.senderTimestampMS, info)
    )


def chat_presence(slot: str, event: Any) -> PresenceSeen | None:
    """A ChatPresenceEv: the peer types (composing text), records a voice note (composing
    audio) or stopped (paused)."""
    source = event.MessageSource
    chat, sender = jid_text(source.Chat), jid_text(source.Sender)
    state = _enum(event, "State")
    if not chat or state not in ("COMPOSING", "PAUSED"):
        return None
    if state == "PAUSED":
        seen: SeenPresence = "paused"
    else:
        seen = "recording" if _enum(event, "Media") == "AUDIO" else "typing"
    return PresenceSeen(slot, chat, sender or chat, seen, time.time())


def presence(slot: str, event: Any) -> PresenceSeen | None:
    """A PresenceEv: a contact whose presence the account subscribed to came online or
    went offline (`at`: its last seen time when WhatsApp gives it)."""
    who = jid_text(event.From)
    if not who:
        return None
    if event.Unavailable:
        last = _seconds(event.LastSeen) if event.LastSeen else 0
        return PresenceSeen(slot, who, who, "unavailable", float(last) or time.time())
    return PresenceSeen(slot, who, who, "available", time.time())


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
    kinds = kind_fields(message)
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
        "message_type": kinds["message_type"],
        "quoted_id": kinds["quoted_id"],
        "mentions": kinds["mentions"],
        "location": kinds["location"],
        "contacts": kinds["contacts"],
        "poll": kinds["poll"],
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
    reactions: list[Reaction] = []
    votes: list[PollUpdate] = []
    for conversation in data.conversations:
        chat_id = conversation.ID
        if not chat_id or chat_id in _SKIPPED_CHATS:
            continue
        group = chat_id.endswith("@g.us")
        for item in conversation.messages:
            _history_reactions(slot, me, chat_id, item.message, reactions, votes)
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
    return HistorySynced(
        slot,
        tuple(messages),
        tuple(chats),
        tuple(contacts.values()),
        tuple(reactions),
        tuple(votes),
    )


def _history_reactions(
    slot: str,
    me: str,
    chat_id: str,
    info: Any,
    reactions: list[Reaction],
    votes: list[PollUpdate],
) -> None:
    """A history message's reactions and poll votes (the phone keeps votes decrypted). Each
    names its author by its own key: the account itself when `fromMe`, else the group
    participant, else the direct chat's peer."""
    target = info.key.ID
    if not target:
        return

    def author(key: Any) -> str:
        return me if key.fromMe else (key.participant or chat_id)

    for kept in info.reactions:
        at = int(kept.senderTimestampMS) / 1000
        who = author(kept.key)
        reactions.append(Reaction(slot, chat_id, target, who, kept.text, bool(kept.key.fromMe), at))
    for kept in info.pollUpdates:
        hashes = tuple(bytes(digest).hex() for digest in kept.vote.selectedOptions)
        at = int(kept.senderTimestampMS) / 1000
        votes.append(
            PollUpdate(slot, chat_id, target, author(kept.pollUpdateMessageKey), hashes, at)
        )


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
        **kind_fields(info.message),
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
    "ChatPresenceEv": chat_presence,
    "PresenceEv": presence,
}
"""neonize.events class name -> its translation, for the cell to subscribe to."""
