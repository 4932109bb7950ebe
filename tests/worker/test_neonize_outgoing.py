"""The neonize backend's outgoing messages, checked on neonize's real protobufs offline:
each request model goes through the queue's own details (`outgoing_payload.content`)
and the builders, and the protobuf is read field by field against the request (the
oracle is what the client asked for, written out here)."""

from __future__ import annotations

from typing import Any

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    ImageMessage,
    Message,
    PollCreationMessage,
)
from wasp_worker.backends import neonize_actions, neonize_outgoing
from wasp_worker.backends.base import CONTENT_KINDS
from wasp_worker.backends.neonize import NeonizeBackend
from wasp_worker.outgoing_payload import content

from wasp.messages import SendRequest

OWN = "5511900000001@s.whatsapp.net"
PEER = "5511900000002@s.whatsapp.net"
REPLY = {
    "reply_to": "3EB0AAAA",
    "quoted_from_me": False,
    "quoted_sender": PEER,
    "quoted_body": "what time?",
    "quoted_type": "text",
}


def details(body: dict[str, Any]) -> dict[str, Any]:
    """What the queue keeps for a request (as `OutboundQueue._insert` does, store aside)."""
    return content(SendRequest.model_validate({"to": PEER, **body}).root)


def built(body: dict[str, Any], extra: dict[str, Any] | None = None) -> Message:
    message = SendRequest.model_validate({"to": PEER, **body}).root
    found = {**details(body), **(extra or {})}
    return neonize_outgoing.build(None, message.type, message.body, None, found, None, OWN)


def test_a_text_is_an_extended_text_with_its_mentions_and_quote() -> None:
    message = built({"text": "at 5, @5511900000003", "mentions": ["5511900000003"]}, REPLY)
    assert not message.HasField("conversation")
    text = message.extendedTextMessage
    assert text.text == "at 5, @5511900000003"
    info = text.contextInfo
    assert list(info.mentionedJID) == ["5511900000003@s.whatsapp.net"]
    assert (info.stanzaID, info.participant) == ("3EB0AAAA", PEER)
    assert info.quotedMessage.conversation == "what time?"
    # It survives the wire: what neonize serializes parses back the same.
    assert Message.FromString(message.SerializeToString()) == message


def test_a_plain_text_has_no_context() -> None:
    message = built({"text": "hi"})
    assert message.extendedTextMessage.text == "hi"
    assert not message.extendedTextMessage.HasField("contextInfo")


def test_a_reply_to_its_own_message_names_the_account() -> None:
    own = {**REPLY, "quoted_from_me": True, "quoted_sender": None}
    info = built({"text": "correction"}, own).extendedTextMessage.contextInfo
    assert (info.stanzaID, info.participant) == ("3EB0AAAA", OWN)


def test_a_location() -> None:
    body = {"type": "location", "latitude": -23.55, "longitude": -46.63, "name": "Office"}
    place = built(body).locationMessage
    assert (place.degreesLatitude, place.degreesLongitude) == (-23.55, -46.63)
    assert (place.name, place.HasField("address")) == ("Office", False)


def test_one_contact_is_a_contact_message_with_the_workers_vcard() -> None:
    body = {"type": "contact", "contacts": [{"name": "Ana", "phone": "+5511988887777"}]}
    card = built(body, REPLY).contactMessage
    assert card.displayName == "Ana"
    assert card.vcard == (
        "BEGIN:VCARD\nVERSION:3.0\nFN:Ana\n"
        "TEL;type=CELL;waid=5511988887777:+5511988887777\nEND:VCARD"
    )
    assert card.contextInfo.stanzaID == "3EB0AAAA"


def test_several_contacts_are_a_contacts_array() -> None:
    body = {
        "type": "contact",
        "contacts": [
            {"name": "Ana", "phone": "5511988887777"},
            {"name": "Bo", "phone": "447700900123"},
        ],
    }
    cards = built(body).contactsArrayMessage
    assert [c.displayName for c in cards.contacts] == ["Ana", "Bo"]
    assert "waid=447700900123:" in cards.contacts[1].vcard
    assert cards.displayName == "Ana, Bo"


def test_media_and_polls_built_by_the_session_get_the_same_context() -> None:
    """What neonize's builders return (media uploaded, a poll from the Go core) is
    decorated like the pure kinds: the quote and mentions in the content's ContextInfo."""
    extra = {**REPLY, "mentions": [PEER]}
    voice = Message(audioMessage=AudioMessage(PTT=True, mimetype="audio/ogg; codecs=opus"))
    image = Message(imageMessage=ImageMessage(caption="look"))
    poll = Message(pollCreationMessage=PollCreationMessage(name="Lunch?"))
    for message, field in ((voice, "audioMessage"), (image, "imageMessage")):
        info = getattr(neonize_outgoing.decorate(message, extra, OWN), field).contextInfo
        assert (info.stanzaID, list(info.mentionedJID)) == ("3EB0AAAA", [PEER])
    assert voice.audioMessage.PTT  # the builder's voice-note flag is kept
    decorated = neonize_outgoing.set_selectable(neonize_outgoing.decorate(poll, extra, OWN), 2)
    assert decorated.pollCreationMessage.selectableOptionsCount == 2
    assert decorated.pollCreationMessage.contextInfo.quotedMessage.conversation == "what time?"


def test_a_bare_conversation_becomes_an_extended_text_to_carry_a_mention() -> None:
    message = neonize_outgoing.decorate(Message(conversation="hey"), {"mentions": [PEER]})
    assert not message.conversation
    assert message.extendedTextMessage.text == "hey"
    assert list(message.extendedTextMessage.contextInfo.mentionedJID) == [PEER]


def test_the_backend_declares_exactly_the_kinds_it_builds() -> None:
    assert frozenset(neonize_outgoing.KINDS) == CONTENT_KINDS
    assert NeonizeBackend.sends == CONTENT_KINDS | neonize_actions.KINDS


def test_what_needs_the_session_is_not_built_without_it() -> None:
    """A link preview (the page is fetched), media (uploaded) and a poll (the Go core's
    secret) go through the client; the pure builder declines them."""
    assert neonize_outgoing.pure("text", "https://example.org", {"link_preview": True}) is None
    assert neonize_outgoing.pure("text", "hi", {}) is not None
    poll = {"poll": {"question": "q", "options": ["a", "b"], "selectable_count": 1}}
    for kind, found in (("image", {}), ("voice", {}), ("sticker", {}), ("poll", poll)):
        assert neonize_outgoing.pure(kind, None, found) is None, kind
