"""Translation of neonize's own MessageEv objects (real protobufs, built offline)."""

from __future__ import annotations

from typing import Any

from neonize.proto.Neonize_pb2 import JID, Message, MessageInfo, MessageSource
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    DocumentMessage,
    ExtendedTextMessage,
    ImageMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage
from wasp_worker.backends.neonize_events import inbound_fields

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
