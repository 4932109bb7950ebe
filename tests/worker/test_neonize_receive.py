"""Every kind of message received through neonize, translated from its real protobufs (built
offline): reply context, mentions, locations, contact cards, polls and their votes, reactions,
stickers, voice notes, chat presence; and the presence commands through a real cell."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from neonize.proto.Neonize_pb2 import JID, Message, MessageInfo, MessageSource
from neonize.proto.Neonize_pb2 import ChatPresence as ChatPresenceEv
from neonize.proto.Neonize_pb2 import HistorySync as HistorySyncEv
from neonize.proto.Neonize_pb2 import Presence as PresenceEv
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    ContactMessage,
    ContactsArrayMessage,
    ContextInfo,
    ExtendedTextMessage,
    ImageMessage,
    LiveLocationMessage,
    LocationMessage,
    PollCreationMessage,
    PollEncValue,
    PollUpdateMessage,
    PollVoteMessage,
    ReactionMessage,
    StickerMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage
from neonize.proto.waHistorySync.WAWebProtobufsHistorySync_pb2 import (
    Conversation,
    HistorySync,
    HistorySyncMsg,
)
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import PollUpdate as WebPollUpdate
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import Reaction as WebReaction
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import WebMessageInfo
from wasp_worker.backends.cell_protocol import Message as MessageEvent
from wasp_worker.backends.cell_protocol import PollUpdate, PresenceSeen, Reaction
from wasp_worker.backends.neonize import NeonizeBackend, _Session
from wasp_worker.backends.neonize_events import (
    TRANSLATORS,
    chat_presence,
    history_sync,
    inbound_fields,
    is_poll_vote,
    message_change,
    poll_update,
    presence,
    reaction,
    vcard_phone,
)
from wasp_worker.breaker import BadMacBreaker, BreakerSettings
from wasp_worker.reactions import resolve_options

from tests.worker.test_neonize_backend import Recorder
from wasp.slots import Slot

ME = "5511000000001@s.whatsapp.net"
PEER = JID(User="5511999999999", Server="s.whatsapp.net")
MYSELF = JID(User="5511000000001", Server="s.whatsapp.net")
GROUP = JID(User="120363012345678901", Server="g.us")
PEER_TEXT = "5511999999999@s.whatsapp.net"
VCARD = (
    "BEGIN:VCARD\nVERSION:3.0\nFN:Bea Lima\n"
    "item1.TEL;waid=5511988887777:+55 11 98888-7777\nitem1.X-ABLabel:Mobile\nEND:VCARD"
)


def envelope(
    content: E2EMessage, *, group: bool = False, from_me: bool = False, ts: int = 1_795_000_000
) -> Any:
    sender = MYSELF if from_me else PEER
    info = MessageInfo(
        MessageSource=MessageSource(
            Chat=GROUP if group else PEER, Sender=sender, IsGroup=group, IsFromMe=from_me
        ),
        ID="3EB0NEW",
        Pushname="Ana",
        Timestamp=ts,
    )
    return Message(Info=info, Message=content)


def fields_of(content: E2EMessage, **how: Any) -> dict[str, Any]:
    found = inbound_fields("A1", ME, envelope(content, **how))
    assert found is not None
    return dict(found)


def test_a_reply_names_the_quoted_message_and_its_mentions() -> None:
    context = ContextInfo(
        stanzaID="3EB0QUOTED",
        participant=PEER_TEXT,
        mentionedJID=["5511000000001@s.whatsapp.net", "5511977776666@s.whatsapp.net"],
    )
    fields = fields_of(
        E2EMessage(extendedTextMessage=ExtendedTextMessage(text="yes @Bea", contextInfo=context)),
        group=True,
    )
    assert fields["message_type"] == "text"
    assert fields["body"] == "yes @Bea"
    assert fields["quoted_id"] == "3EB0QUOTED"
    assert fields["mentions"] == ["5511000000001@s.whatsapp.net", "5511977776666@s.whatsapp.net"]


def test_a_media_reply_carries_its_context_too_and_a_plain_message_none() -> None:
    image = ImageMessage(
        mimetype="image/jpeg", caption="this one", contextInfo=ContextInfo(stanzaID="3EB0Q")
    )
    fields = fields_of(E2EMessage(imageMessage=image))
    assert (fields["message_type"], fields["quoted_id"], fields["body"]) == (
        "image",
        "3EB0Q",
        "this one",
    )
    plain = fields_of(E2EMessage(conversation="hi"))
    assert (plain["quoted_id"], plain["mentions"]) == (None, [])


def test_a_location_and_a_live_location() -> None:
    at = LocationMessage(
        degreesLatitude=-23.5505, degreesLongitude=-46.6333, name="Sé", address="Praça da Sé"
    )
    fields = fields_of(E2EMessage(locationMessage=at))
    assert fields["message_type"] == "location"
    assert fields["location"] == {
        "latitude": -23.5505,
        "longitude": -46.6333,
        "name": "Sé",
        "address": "Praça da Sé",
    }
    assert fields["media_type"] is None
    live = LiveLocationMessage(degreesLatitude=48.8566, degreesLongitude=2.3522, caption="here")
    fields = fields_of(E2EMessage(liveLocationMessage=live))
    assert fields["message_type"] == "location"
    assert fields["location"] == {
        "latitude": 48.8566,
        "longitude": 2.3522,
        "name": None,
        "address": None,
    }
    assert fields["body"] == "here"


def test_a_contact_card_and_an_array_of_them() -> None:
    card = ContactMessage(displayName="Bea Lima", vcard=VCARD)
    fields = fields_of(E2EMessage(contactMessage=card))
    assert fields["message_type"] == "contact"
    assert fields["contacts"] == [{"name": "Bea Lima", "vcard": VCARD, "phone": "5511988887777"}]
    plain = "BEGIN:VCARD\nFN:Caio\nTEL;TYPE=CELL:+1 (415) 555-0100\nEND:VCARD"
    many = ContactsArrayMessage(
        displayName="2 contacts",
        contacts=[card, ContactMessage(displayName="Caio", vcard=plain)],
    )
    fields = fields_of(E2EMessage(contactsArrayMessage=many))
    assert fields["message_type"] == "contact"
    assert [(c["name"], c["phone"]) for c in fields["contacts"]] == [
        ("Bea Lima", "5511988887777"),
        ("Caio", "14155550100"),
    ]
    assert vcard_phone("BEGIN:VCARD\nFN:Nobody\nEND:VCARD") is None


@pytest.mark.parametrize(
    "field", ["pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3"]
)
def test_a_poll_of_each_version(field: str) -> None:
    created = PollCreationMessage(
        name="Lunch?",
        options=[
            PollCreationMessage.Option(optionName="pizza"),
            PollCreationMessage.Option(optionName="sushi"),
        ],
        selectableOptionsCount=1,
        contextInfo=ContextInfo(stanzaID="3EB0Q"),
    )
    fields = fields_of(E2EMessage(**{field: created}))
    assert fields["message_type"] == "poll"
    assert fields["poll"] == {
        "question": "Lunch?",
        "options": ["pizza", "sushi"],
        "selectable_count": 1,
    }
    assert fields["body"] == "Lunch?"
    assert fields["quoted_id"] == "3EB0Q"


def test_a_sticker_is_saved_as_media_and_a_voice_note_is_a_voice_message() -> None:
    sticker = fields_of(E2EMessage(stickerMessage=StickerMessage(mimetype="image/webp")))
    assert (sticker["message_type"], sticker["media_type"], sticker["mime_type"]) == (
        "sticker",
        "sticker",
        "image/webp",
    )
    voice = AudioMessage(mimetype="audio/ogg; codecs=opus", PTT=True, fileLength=2048)
    fields = fields_of(E2EMessage(audioMessage=voice))
    assert (fields["message_type"], fields["media_type"], fields["file_size"]) == (
        "voice",
        "voice",
        2048,
    )
    music = fields_of(E2EMessage(audioMessage=AudioMessage(mimetype="audio/mpeg")))
    assert (music["message_type"], music["media_type"]) == ("audio", "audio")


def reacting(text: str, *, from_me: bool = False, millis: int = 1_795_000_123_456) -> Any:
    key = MessageKey(remoteJID=PEER_TEXT, fromMe=True, ID="3EB0MINE")
    content = E2EMessage(
        reactionMessage=ReactionMessage(key=key, text=text, senderTimestampMS=millis)
    )
    return envelope(content, from_me=from_me)


def test_a_reaction_names_the_message_the_reactor_and_the_emoji() -> None:
    event = reacting("👍")
    assert reaction("A1", event) == Reaction(
        "A1", PEER_TEXT, "3EB0MINE", PEER_TEXT, "👍", False, 1_795_000_123.456
    )
    assert inbound_fields("A1", ME, event) is None  # no message of its own
    assert message_change("A1", event) is None


def test_an_empty_reaction_removes_it_and_the_account_s_own_reaction_is_from_me() -> None:
    removed = reaction("A1", reacting(""))
    assert removed is not None
    assert removed.emoji == ""
    own = reaction("A1", reacting("❤️", from_me=True))
    assert own is not None
    assert (own.reactor, own.from_me) == (ME, True)
    assert reaction("A1", envelope(E2EMessage(conversation="hi"))) is None


def voting() -> Any:
    update = PollUpdateMessage(
        pollCreationMessageKey=MessageKey(remoteJID=PEER_TEXT, fromMe=True, ID="3EB0POLL"),
        vote=PollEncValue(encPayload=b"\x01" * 32, encIV=b"\x02" * 12),
        senderTimestampMS=1_795_000_200_000,
    )
    return envelope(E2EMessage(pollUpdateMessage=update))


def test_a_decrypted_poll_vote_carries_the_option_hashes_the_store_resolves() -> None:
    event = voting()
    assert is_poll_vote(event)
    assert not is_poll_vote(envelope(E2EMessage(conversation="hi")))
    assert inbound_fields("A1", ME, event) is None
    # What `client.decrypt_poll_vote` returns: SHA-256 of each chosen option's name.
    decrypted = PollVoteMessage(selectedOptions=[hashlib.sha256(b"sushi").digest()])
    update = poll_update("A1", event, decrypted.selectedOptions)
    assert update == PollUpdate(
        "A1",
        PEER_TEXT,
        "3EB0POLL",
        PEER_TEXT,
        (hashlib.sha256(b"sushi").hexdigest(),),
        1_795_000_200.0,
    )
    assert update is not None
    named = resolve_options(["sha256:" + h for h in update.option_hashes], ["pizza", "sushi"])
    assert named == ["sushi"]
    withdrawn = poll_update("A1", event, PollVoteMessage().selectedOptions)
    assert withdrawn is not None
    assert withdrawn.option_hashes == ()


def chat_presence_event(state: int, media: int, *, group: bool = False) -> Any:
    source = MessageSource(Chat=GROUP if group else PEER, Sender=PEER, IsGroup=group)
    return ChatPresenceEv(MessageSource=source, State=state, Media=media)


def test_chat_presence_is_typing_recording_or_paused() -> None:
    composing, paused = ChatPresenceEv.COMPOSING, ChatPresenceEv.PAUSED
    text, audio = ChatPresenceEv.TEXT, ChatPresenceEv.AUDIO
    states = {
        (composing, text): "typing",
        (composing, audio): "recording",
        (paused, text): "paused",
    }
    for (state, media), expected in states.items():
        seen = chat_presence("A1", chat_presence_event(state, media))
        assert isinstance(seen, PresenceSeen)
        assert (seen.chat_id, seen.sender, seen.state) == (PEER_TEXT, PEER_TEXT, expected)
    in_group = chat_presence("A1", chat_presence_event(composing, text, group=True))
    assert in_group is not None
    assert (in_group.chat_id, in_group.sender) == ("120363012345678901@g.us", PEER_TEXT)
    assert TRANSLATORS["ChatPresenceEv"] is chat_presence


def test_presence_is_available_or_unavailable_with_its_last_seen() -> None:
    online = presence("A1", PresenceEv(From=PEER, Unavailable=False))
    assert online is not None
    assert (online.chat_id, online.state) == (PEER_TEXT, "available")
    offline = presence("A1", PresenceEv(From=PEER, Unavailable=True, LastSeen=1_795_000_000))
    assert offline == PresenceSeen("A1", PEER_TEXT, PEER_TEXT, "unavailable", 1_795_000_000.0)
    assert TRANSLATORS["PresenceEv"] is presence


def test_history_brings_the_reactions_and_decrypted_votes_the_phone_kept() -> None:
    poll = PollCreationMessage(
        name="Lunch?",
        options=[
            PollCreationMessage.Option(optionName="pizza"),
            PollCreationMessage.Option(optionName="sushi"),
        ],
    )
    kept = WebMessageInfo(
        key=MessageKey(remoteJID="120363012345678901@g.us", fromMe=True, ID="3EB0POLL"),
        message=E2EMessage(pollCreationMessage=poll),
        messageTimestamp=1_795_000_000,
        reactions=[
            WebReaction(
                key=MessageKey(fromMe=False, participant=PEER_TEXT, ID="R1"),
                text="🔥",
                senderTimestampMS=1_795_000_100_000,
            ),
            WebReaction(key=MessageKey(fromMe=True, ID="R2"), text="👍", senderTimestampMS=2),
        ],
        pollUpdates=[
            WebPollUpdate(
                pollUpdateMessageKey=MessageKey(fromMe=False, participant=PEER_TEXT, ID="V1"),
                vote=PollVoteMessage(selectedOptions=[hashlib.sha256(b"pizza").digest()]),
                senderTimestampMS=1_795_000_200_000,
            )
        ],
    )
    group = "120363012345678901@g.us"
    data = HistorySync(
        syncType=HistorySync.RECENT,
        conversations=[Conversation(ID=group, messages=[HistorySyncMsg(message=kept)])],
    )
    synced = history_sync("A1", ME, HistorySyncEv(Data=data), 1_795_000_000.0)
    assert synced is not None
    assert synced.reactions == (
        Reaction("A1", group, "3EB0POLL", PEER_TEXT, "🔥", False, 1_795_000_100.0),
        Reaction("A1", group, "3EB0POLL", ME, "👍", True, 0.002),
    )
    assert synced.votes == (
        PollUpdate(
            "A1",
            group,
            "3EB0POLL",
            PEER_TEXT,
            (hashlib.sha256(b"pizza").hexdigest(),),
            1_795_000_200.0,
        ),
    )


def test_history_messages_carry_their_kind_too() -> None:
    at = LocationMessage(degreesLatitude=1.5, degreesLongitude=2.5)
    reply = ExtendedTextMessage(text="ok", contextInfo=ContextInfo(stanzaID="3EB0OLD"))
    items = [
        HistorySyncMsg(
            message=WebMessageInfo(
                key=MessageKey(remoteJID=PEER_TEXT, fromMe=False, ID=message_id),
                message=content,
                messageTimestamp=1_795_000_000 + n,
            )
        )
        for n, (message_id, content) in enumerate(
            [("H1", E2EMessage(locationMessage=at)), ("H2", E2EMessage(extendedTextMessage=reply))]
        )
    ]
    data = HistorySync(
        syncType=HistorySync.RECENT,
        conversations=[Conversation(ID=PEER_TEXT, messages=items)],
    )
    synced = history_sync("A1", ME, HistorySyncEv(Data=data), 1_795_000_000.0)
    assert synced is not None
    first, second = synced.messages
    assert first["message_type"] == "location"
    assert first["location"]["latitude"] == 1.5
    assert (second["message_type"], second["quoted_id"]) == ("text", "3EB0OLD")


async def test_presence_commands_go_through_a_real_cell_which_says_it_is_not_connected(
    tmp_path: Path,
) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    slot = Slot.parse("A1")
    try:
        await backend.start(slot, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 1)  # offline: the connect ended
        backend.sessions[slot].connected = True  # as if still up: the cell must answer itself
        with pytest.raises(RuntimeError, match="not_connected"):
            await backend.subscribe_presence(slot, PEER_TEXT)
        with pytest.raises(RuntimeError, match="not_connected"):
            await backend.send_presence(slot, PEER_TEXT, "typing")
        assert backend.cells[0].process.is_alive()
    finally:
        await backend.close()


async def test_a_message_the_worker_could_not_store_is_handed_over_again(tmp_path: Path) -> None:
    """whatsmeow acknowledged it already: the backend tries again, and the session's other
    events are not held meanwhile."""
    seen = Recorder()
    attempts: list[str] = []

    async def on_inbound(fields: dict[str, Any]) -> None:
        attempts.append(fields["wa_message_id"])
        if len(attempts) < 3:  # the store refuses twice (a fault no real part gives on demand)
            raise OSError("disk I/O error")

    fields = inbound_fields("A1", ME, envelope(E2EMessage(conversation="hi")))
    assert fields is not None
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep, on_inbound=on_inbound)
    slot = Slot.parse("A1")
    backend.sessions[slot] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
    try:
        await backend.handle(MessageEvent("A1", fields))  # does not raise: the dispatcher lives on
        await seen.wait_for(lambda: backend.inbound_retried == 1)
        assert attempts == ["3EB0NEW"] * 3
        assert seen.delays[:2] == [1, 2]
        assert backend.inbound_lost == 0
    finally:
        await backend.close()
