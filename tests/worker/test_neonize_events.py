"""Translation of neonize's own event objects (real protobufs, built offline)."""

from __future__ import annotations

from typing import Any

import neonize.events
from neonize.proto.Neonize_pb2 import (
    JID,
    ConnectFailureReason,
    Message,
    MessageInfo,
    MessageSource,
)
from neonize.proto.Neonize_pb2 import ConnectFailure as ConnectFailureEv
from neonize.proto.Neonize_pb2 import KeepAliveTimeout as KeepAliveTimeoutEv
from neonize.proto.Neonize_pb2 import LoggedOut as LoggedOutEv
from neonize.proto.Neonize_pb2 import Receipt as ReceiptEv
from neonize.proto.Neonize_pb2 import StreamError as StreamErrorEv
from neonize.proto.Neonize_pb2 import TemporaryBan as TemporaryBanEv
from neonize.proto.Neonize_pb2 import UndecryptableMessage as UndecryptableMessageEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    DocumentMessage,
    ExtendedTextMessage,
    ImageMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage
from wasp_worker.backends.cell_protocol import (
    ConnectFailure,
    KeepAliveTimeout,
    LoggedOut,
    Receipt,
    ReceiptState,
    StreamError,
    TemporaryBan,
    Undecryptable,
)
from wasp_worker.backends.neonize_events import (
    CONNECT_FAILURE_CODES,
    TEMP_BAN_CODES,
    TRANSLATORS,
    connect_failure,
    inbound_fields,
    keepalive_timeout,
    logged_out,
    receipt,
    stream_error,
    temporary_ban,
    undecryptable,
)

ME = "5511000000001@s.whatsapp.net"


def event(
    content: E2EMessage,
    *,
    group: bool = False,
    ts: int = 1_795_000_000_000,
    from_me: bool = False,
) -> Any:
    other = JID(User="5511999999999", Server="s.whatsapp.net")
    sender = JID(User="5511000000001", Server="s.whatsapp.net") if from_me else other
    chat = JID(User="120363012345678901", Server="g.us") if group else other
    info = MessageInfo(
        MessageSource=MessageSource(Chat=chat, Sender=sender, IsGroup=group, IsFromMe=from_me),
        ID="3EB0ABCDEF0123456789",
        Pushname="Ana",
        Timestamp=ts,
    )
    return Message(Info=info, Message=content)


def test_plain_text_direct_message() -> None:
    fields = inbound_fields("A1", ME, event(E2EMessage(conversation="hello")))
    assert fields == {
        "slot": "A1",
        "from": "5511999999999",
        "to": ME,
        "body": "hello",
        "chat_id": "5511999999999@s.whatsapp.net",
        "chat_type": "direct",
        "sender_jid_raw": "5511999999999@s.whatsapp.net",
        "push_name": "Ana",
        "wa_message_id": "3EB0ABCDEF0123456789",
        "timestamp": 1_795_000_000,
        "media_type": None,
        "media_url": None,
        "mime_type": None,
        "file_name": None,
        "file_size": None,
        "from_me": False,
        "sender_lid": None,
        "sender_phone_jid": "5511999999999@s.whatsapp.net",
        "message_type": "text",
        "quoted_id": None,
        "mentions": [],
        "location": None,
        "contacts": None,
        "poll": None,
    }


def test_a_message_sent_from_the_account_s_own_phone_is_outbound_to_the_chat() -> None:
    fields = inbound_fields("A1", ME, event(E2EMessage(conversation="on my way"), from_me=True))
    assert fields is not None
    assert fields["from_me"] is True
    assert (fields["from"], fields["to"]) == ("5511000000001", "5511999999999@s.whatsapp.net")
    assert fields["chat_id"] == "5511999999999@s.whatsapp.net"


def test_a_lid_sender_carries_its_phone_number_as_the_alternate() -> None:
    lid = JID(User="190000000000123", Server="lid")
    phone = JID(User="5511999999999", Server="s.whatsapp.net")
    info = MessageInfo(
        MessageSource=MessageSource(Chat=lid, Sender=lid, SenderAlt=phone),
        ID="3EB0LID",
        Timestamp=1_795_000_000,
    )
    fields = inbound_fields("A1", ME, Message(Info=info, Message=E2EMessage(conversation="oi")))
    assert fields is not None
    assert fields["sender_lid"] == "190000000000123@lid"
    assert fields["sender_phone_jid"] == "5511999999999@s.whatsapp.net"
    assert fields["chat_id"] == "190000000000123@lid"


def test_extended_text_in_a_group() -> None:
    content = E2EMessage(extendedTextMessage=ExtendedTextMessage(text="hi all"))
    fields = inbound_fields("A1", ME, event(content, group=True))
    assert fields is not None
    assert fields["body"] == "hi all"
    assert fields["chat_type"] == "group"
    assert fields["chat_id"] == "120363012345678901@g.us"


def test_media_keeps_type_mime_name_size_and_caption() -> None:
    image = E2EMessage(
        imageMessage=ImageMessage(mimetype="image/jpeg", caption="look", fileLength=2048)
    )
    fields = inbound_fields("A1", ME, event(image))
    assert fields is not None
    assert (fields["media_type"], fields["mime_type"], fields["file_size"], fields["body"]) == (
        "image",
        "image/jpeg",
        2048,
        "look",
    )
    document = E2EMessage(
        documentMessage=DocumentMessage(
            mimetype="application/pdf", fileName="invoice.pdf", fileLength=10
        )
    )
    fields = inbound_fields("A1", ME, event(document))
    assert fields is not None
    assert (fields["media_type"], fields["file_name"], fields["body"]) == (
        "document",
        "invoice.pdf",
        "",
    )


def test_empty_message_without_media_gives_nothing() -> None:
    assert inbound_fields("A1", ME, event(E2EMessage())) is None


# -- status and receipt events -------------------------------------------------

GROUP = JID(User="120363012345678901", Server="g.us")
CONTACT = JID(User="5511999999999", Server="s.whatsapp.net")
MYSELF = JID(User="5511000000001", Server="s.whatsapp.net")


def test_every_subscribed_class_is_a_neonize_event_of_that_name() -> None:
    for name in TRANSLATORS:
        neonize_class = getattr(neonize.events, name)
        assert neonize_class in neonize.events.EVENT_TO_INT, name
        translated = TRANSLATORS[name]("A1", neonize_class())
        assert translated is None or translated.slot == "A1"


def test_every_code_neonize_knows_has_whatsmeow_s_number() -> None:
    """A neonize upgrade that adds a reason fails here instead of reporting code None."""
    reasons = ConnectFailureReason.DESCRIPTOR.values_by_name
    assert set(reasons) == set(CONNECT_FAILURE_CODES)
    bans = TemporaryBanEv.DESCRIPTOR.enum_types_by_name["TempBanReason"].values_by_name
    assert set(bans) == set(TEMP_BAN_CODES)


def test_a_logout_carries_whatsmeow_s_reason() -> None:
    event = LoggedOutEv(OnConnect=True, Reason=ConnectFailureReason.MAIN_DEVICE_GONE)
    assert logged_out("A1", event) == LoggedOut("A1", True, 403, "MAIN_DEVICE_GONE")
    from_stream = LoggedOutEv(OnConnect=False, Reason=ConnectFailureReason.LOGGED_OUT)
    assert logged_out("A1", from_stream) == LoggedOut("A1", False, 401, "LOGGED_OUT")


def test_a_temporary_ban_carries_its_code_and_expiry() -> None:
    event = TemporaryBanEv(Code=TemporaryBanEv.BLOCKED_BY_USERS, Expire=7200)
    assert temporary_ban("A1", event) == TemporaryBan("A1", 102, "BLOCKED_BY_USERS", 7200)
    assert temporary_ban("A1", TemporaryBanEv()) == TemporaryBan("A1", None, None, 0)


def test_a_connect_failure_carries_its_code_and_message() -> None:
    event = ConnectFailureEv(Reason=ConnectFailureReason.BAD_USER_AGENT, Message="rejected")
    assert connect_failure("A1", event) == ConnectFailure("A1", 409, "BAD_USER_AGENT", "rejected")
    # A reason neonize's encoder does not know (e.g. 413) arrives unset: no code, not 400.
    assert connect_failure("A1", ConnectFailureEv(Message="x")).code is None


def test_keepalive_stream_error_and_undecryptable() -> None:
    timeout = KeepAliveTimeoutEv(ErrorCount=3, LastSuccess=1_795_000_000)
    assert keepalive_timeout("A1", timeout) == KeepAliveTimeout("A1", 3, 1_795_000_000)
    assert stream_error("A1", StreamErrorEv(Code="503")) == StreamError("A1", "503")
    unavailable = UndecryptableMessageEv(IsUnavailable=True)
    assert undecryptable("A1", unavailable) == Undecryptable("A1", True)
    assert undecryptable("A1", UndecryptableMessageEv()) == Undecryptable("A1", False)


def receipt_event(
    kind: int | None, *, chat: JID = CONTACT, sender: JID = CONTACT, from_me: bool = False
) -> ReceiptEv:
    source = MessageSource(Chat=chat, Sender=sender, IsFromMe=from_me, IsGroup=chat == GROUP)
    event = ReceiptEv(MessageSource=source, MessageIDs=["3EB0A", "3EB0B"], Timestamp=1_795_000_000)
    if kind is not None:
        event.Type = kind
    return event


def test_a_recipient_s_receipts_of_our_messages_are_delivered_read_played() -> None:
    states: list[tuple[int, ReceiptState]] = [
        (ReceiptEv.DELIVERED, "delivered"),
        (ReceiptEv.READ, "read"),
        (ReceiptEv.PLAYED, "played"),
    ]
    for kind, state in states:
        assert receipt("A1", receipt_event(kind)) == Receipt(
            "A1", "5511999999999@s.whatsapp.net", ("3EB0A", "3EB0B"), state, 1_795_000_000
        )


def test_in_a_group_the_receipt_is_the_group_s() -> None:
    found = receipt("A1", receipt_event(ReceiptEv.READ, chat=GROUP))
    assert found is not None
    assert (found.chat_id, found.state) == ("120363012345678901@g.us", "read")


def test_our_own_devices_receipts_are_no_receipt_of_a_sent_message() -> None:
    # read-self: we read a received message on the phone; sender: our phone got our copy.
    for kind in (ReceiptEv.READ_SELF, ReceiptEv.SENDER, ReceiptEv.READ):
        assert receipt("A1", receipt_event(kind, sender=MYSELF, from_me=True)) is None


def test_receipts_that_say_nothing_of_delivery_are_dropped() -> None:
    for kind in (ReceiptEv.RETRY, ReceiptEv.INACTIVE, ReceiptEv.PEER_MSG, ReceiptEv.SERVER_ERROR):
        assert receipt("A1", receipt_event(kind)) is None
    # neonize leaves the type unset for one it cannot name; unset would read as DELIVERED.
    assert receipt("A1", receipt_event(None)) is None
