"""Edits, deletes, history syncs and chat settings, translated from neonize's real protobufs
(built offline), and the app-state patches that tell WhatsApp a chat's settings."""

from __future__ import annotations

from typing import Any

from neonize.proto.Neonize_pb2 import (
    JID,
    LocalChatSettings,
    Message,
    MessageInfo,
    MessageSource,
    PatchInfo,
)
from neonize.proto.Neonize_pb2 import HistorySync as HistorySyncEv
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    ExtendedTextMessage,
    FutureProofMessage,
    ImageMessage,
    ProtocolMessage,
    ReactionMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage
from neonize.proto.waHistorySync.WAWebProtobufsHistorySync_pb2 import (
    Conversation,
    HistorySync,
    HistorySyncMsg,
    PhoneNumberToLIDMapping,
    Pushname,
)
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import WebMessageInfo
from wasp_worker.backends.cell_protocol import (
    ChatSetting,
    MessageEdited,
    MessageRevoked,
    SetChatSettings,
)
from wasp_worker.backends.neonize_events import (
    MUTED_FOREVER,
    chat_setting,
    history_sync,
    message_change,
)
from wasp_worker.backends.neonize_patches import patches

ME = "5511000000001@s.whatsapp.net"
PEER = JID(User="5511999999999", Server="s.whatsapp.net")
MYSELF = JID(User="5511000000001", Server="s.whatsapp.net")
GROUP = JID(User="120363012345678901", Server="g.us")
NOW = 1_795_000_000.0


def envelope(content: E2EMessage, *, group: bool = False, from_me: bool = False) -> Any:
    sender = MYSELF if from_me else PEER
    info = MessageInfo(
        MessageSource=MessageSource(
            Chat=GROUP if group else PEER, Sender=sender, IsGroup=group, IsFromMe=from_me
        ),
        ID="3EB0CHANGE",
        Timestamp=1_795_000_100,
    )
    return Message(Info=info, Message=content)


def edit(text: str, *, from_me_key: bool = True, target: str = "3EB0ORIGINAL") -> ProtocolMessage:
    return ProtocolMessage(
        key=MessageKey(remoteJID="someone-else@s.whatsapp.net", fromMe=from_me_key, ID=target),
        type=ProtocolMessage.MESSAGE_EDIT,
        editedMessage=E2EMessage(extendedTextMessage=ExtendedTextMessage(text=text)),
        timestampMS=1_795_000_050_123,
    )


def revoke(*, from_me_key: bool = True) -> ProtocolMessage:
    return ProtocolMessage(
        key=MessageKey(remoteJID=ME, fromMe=from_me_key, ID="3EB0ORIGINAL"),
        type=ProtocolMessage.REVOKE,
    )


# -- edits and deletes ----------------------------------------------------------


def test_an_edit_names_the_message_the_new_text_and_when() -> None:
    change = message_change("A1", envelope(E2EMessage(protocolMessage=edit("fixed typo"))))
    # The chat is the envelope's, not the key's remoteJID.
    assert change == MessageEdited(
        "A1", "5511999999999@s.whatsapp.net", "3EB0ORIGINAL", "fixed typo", 1_795_000_050
    )


def test_an_edit_in_whatsmeow_s_edited_message_wrapper_is_the_same_edit() -> None:
    wrapped = E2EMessage(
        editedMessage=FutureProofMessage(message=E2EMessage(protocolMessage=edit("fixed typo")))
    )
    bare = E2EMessage(protocolMessage=edit("fixed typo"))
    assert message_change("A1", envelope(wrapped)) == message_change("A1", envelope(bare))
    assert message_change("A1", envelope(wrapped)) is not None


def test_an_edit_of_a_caption_takes_the_caption() -> None:
    protocol = edit("")
    protocol.editedMessage.CopyFrom(E2EMessage(imageMessage=ImageMessage(caption="new caption")))
    change = message_change("A1", envelope(E2EMessage(protocolMessage=protocol)))
    assert isinstance(change, MessageEdited)
    assert change.body == "new caption"


def test_a_delete_for_everyone_names_the_message_and_when() -> None:
    change = message_change("A1", envelope(E2EMessage(protocolMessage=revoke())))
    assert change == MessageRevoked(
        "A1", "5511999999999@s.whatsapp.net", "3EB0ORIGINAL", 1_795_000_100
    )


def test_nobody_edits_or_deletes_a_message_this_account_sent_in_a_direct_chat() -> None:
    """fromMe=false in the key, from the sender's side, names a message of ours."""
    assert (
        message_change("A1", envelope(E2EMessage(protocolMessage=revoke(from_me_key=False))))
        is None
    )
    assert (
        message_change("A1", envelope(E2EMessage(protocolMessage=edit("x", from_me_key=False))))
        is None
    )


def test_a_group_admin_may_delete_someone_else_s_message_but_not_edit_it() -> None:
    deleted = message_change(
        "A1", envelope(E2EMessage(protocolMessage=revoke(from_me_key=False)), group=True)
    )
    assert deleted == MessageRevoked("A1", "120363012345678901@g.us", "3EB0ORIGINAL", 1_795_000_100)
    edited = message_change(
        "A1", envelope(E2EMessage(protocolMessage=edit("x", from_me_key=False)), group=True)
    )
    assert edited is None


def test_an_edit_from_the_account_s_own_phone_is_an_edit_too() -> None:
    change = message_change("A1", envelope(E2EMessage(protocolMessage=edit("mine")), from_me=True))
    assert isinstance(change, MessageEdited)
    assert change.body == "mine"


def test_other_messages_are_no_change() -> None:
    assert message_change("A1", envelope(E2EMessage(conversation="hello"))) is None
    other = ProtocolMessage(key=MessageKey(ID="X"), type=ProtocolMessage.EPHEMERAL_SETTING)
    assert message_change("A1", envelope(E2EMessage(protocolMessage=other))) is None
    no_target = ProtocolMessage(type=ProtocolMessage.REVOKE)
    assert message_change("A1", envelope(E2EMessage(protocolMessage=no_target))) is None


# -- history sync -----------------------------------------------------------------


def web(
    message_id: str,
    chat: str,
    ts: int,
    content: E2EMessage | None,
    *,
    from_me: bool = False,
    participant: str = "",
    push_name: str = "",
) -> HistorySyncMsg:
    info = WebMessageInfo(
        key=MessageKey(remoteJID=chat, fromMe=from_me, ID=message_id),
        messageTimestamp=ts,
        pushName=push_name,
    )
    if content is not None:
        info.message.CopyFrom(content)
    if participant:
        info.participant = participant
    return HistorySyncMsg(message=info)


def sample_sync() -> HistorySyncEv:
    direct = "5511999999999@s.whatsapp.net"
    group = "120363012345678901@g.us"
    member = "5511888888888@s.whatsapp.net"
    return HistorySyncEv(
        Data=HistorySync(
            syncType=HistorySync.INITIAL_BOOTSTRAP,
            conversations=[
                Conversation(
                    ID=direct,
                    unreadCount=2,
                    pinned=1_794_000_000,
                    muteEndTime=1_796_000_000_000,  # milliseconds, in the future
                    lidJID="190000000000123@lid",
                    messages=[  # newest first, as WhatsApp sends them
                        web("D4", direct, 400, E2EMessage(conversation="four"), push_name="Ana"),
                        web("D3", direct, 300, E2EMessage(conversation="three")),
                        web("D2", direct, 200, E2EMessage(conversation="mine"), from_me=True),
                        web("D1", direct, 100, E2EMessage(conversation="one")),
                        web("D0", direct, 50, None),  # a revoked stub: nothing left
                        web(
                            "DR",
                            direct,
                            60,
                            E2EMessage(reactionMessage=ReactionMessage(text="+1")),
                        ),
                    ],
                ),
                Conversation(
                    ID=group,
                    name="Team",
                    archived=True,
                    muteEndTime=2**64 - 1,  # -1, "forever", in an unsigned field
                    messages=[
                        web(
                            "G1",
                            group,
                            500,
                            E2EMessage(
                                imageMessage=ImageMessage(mimetype="image/jpeg", caption="pic")
                            ),
                            participant=member,
                            push_name="Bia",
                        ),
                    ],
                ),
                Conversation(ID="status@broadcast", messages=[]),
            ],
            pushnames=[
                Pushname(ID=direct, pushname="Ana"),
                Pushname(ID=member, pushname="Bia"),
                Pushname(ID="190000000000777@lid", pushname="Cy"),
            ],
            phoneNumberToLidMappings=[
                PhoneNumberToLIDMapping(pnJID=member, lidJID="190000000000888@lid")
            ],
        )
    )


def test_a_history_sync_gives_messages_chats_and_contacts() -> None:
    synced = history_sync("A1", ME, sample_sync(), NOW)
    assert synced is not None
    by_id = {m["wa_message_id"]: m for m in synced.messages}
    # Oldest first; stubs and reactions left out.
    assert [m["wa_message_id"] for m in synced.messages] == ["D1", "D2", "D3", "D4", "G1"]
    # unreadCount 2: the two newest inbound messages are unread, the rest read.
    assert {i: m["read"] for i, m in by_id.items()} == {
        "D1": True,
        "D2": True,
        "D3": False,
        "D4": False,
        "G1": True,
    }
    assert by_id["D2"]["from_me"] is True
    assert (by_id["D2"]["from"], by_id["D2"]["to"]) == ("5511000000001", by_id["D2"]["chat_id"])
    assert (by_id["D4"]["from"], by_id["D4"]["to"], by_id["D4"]["push_name"]) == (
        "5511999999999",
        ME,
        "Ana",
    )
    group = by_id["G1"]
    assert (group["chat_type"], group["sender_jid_raw"], group["media_type"], group["body"]) == (
        "group",
        "5511888888888@s.whatsapp.net",
        "image",
        "pic",
    )
    assert group["sender_phone_jid"] == "5511888888888@s.whatsapp.net"
    assert by_id["D1"]["timestamp"] == 100
    assert set(by_id["D1"]) >= {"slot", "chat_id", "body", "media_url", "sender_lid", "file_size"}
    assert synced.chats == (
        {
            "chat_id": "5511999999999@s.whatsapp.net",
            "name": None,
            "pinned": True,
            "archived": False,
            "muted_until": 1_796_000_000.0,
            "unread": 2,
        },
        {
            "chat_id": "120363012345678901@g.us",
            "name": "Team",
            "pinned": False,
            "archived": True,
            "muted_until": float(MUTED_FOREVER),
            "unread": 0,
        },
    )
    assert sorted(synced.contacts, key=lambda c: c["phone_jid"] or c["lid"] or "") == [
        {"phone_jid": None, "lid": "190000000000777@lid", "name": None, "push_name": "Cy"},
        {
            "phone_jid": "5511888888888@s.whatsapp.net",
            "lid": "190000000000888@lid",
            "name": None,
            "push_name": "Bia",
        },
        {
            "phone_jid": "5511999999999@s.whatsapp.net",
            "lid": "190000000000123@lid",
            "name": None,
            "push_name": "Ana",
        },
    ]


def test_a_mute_that_ended_is_no_mute_and_a_sync_of_nothing_is_none() -> None:
    past = HistorySyncEv(
        Data=HistorySync(conversations=[Conversation(ID="1@s.whatsapp.net", muteEndTime=1000)])
    )
    synced = history_sync("A1", ME, past, NOW)
    assert synced is not None
    assert synced.chats[0]["muted_until"] is None
    assert history_sync("A1", ME, HistorySyncEv(Data=HistorySync()), NOW) is None


# -- chat settings from whatsmeow's store --------------------------------------------


def test_whatsmeow_s_chat_settings_become_a_setting_only_when_found() -> None:
    chat = "5511999999999@s.whatsapp.net"
    assert chat_setting(chat, LocalChatSettings(Found=False, Pinned=True), NOW) is None
    found = LocalChatSettings(Found=True, Pinned=True, Archived=False, MutedUntil=NOW + 60)
    assert chat_setting(chat, found, NOW) == ChatSetting(chat, True, False, NOW + 60)
    # Go's zero time (never muted) and a mute already over are no mute.
    zero = LocalChatSettings(Found=True, MutedUntil=-62_135_596_800)
    assert chat_setting(chat, zero, NOW) == ChatSetting(chat, False, False, None)
    over = LocalChatSettings(Found=True, MutedUntil=NOW - 1)
    assert chat_setting(chat, over, NOW) == ChatSetting(chat, False, False, None)
    forever = LocalChatSettings(Found=True, MutedUntil=float(MUTED_FOREVER))
    assert chat_setting(chat, forever, NOW) == ChatSetting(chat, False, False, MUTED_FOREVER)


# -- app-state patches -----------------------------------------------------------------


def command(**settings: Any) -> SetChatSettings:
    base: dict[str, Any] = {
        "request_id": 1,
        "slot": "A1",
        "chat_id": "5511999999999@s.whatsapp.net",
        "pinned": None,
        "archived": None,
        "mute": False,
        "muted_until": None,
        "last_message_at": 1_794_999_000.0,
    }
    return SetChatSettings(**{**base, **settings})


def test_a_pin_is_whatsmeow_s_build_pin() -> None:
    (patch,) = patches(command(pinned=True), NOW)
    assert patch.Type == PatchInfo.REGULAR_LOW
    assert patch.Timestamp == int(NOW * 1e9)  # neonize reads nanoseconds
    (only,) = patch.Mutations
    assert (list(only.Index), only.Version) == (["pin_v1", "5511999999999@s.whatsapp.net"], 5)
    assert only.Value.pinAction.pinned is True
    assert only.Value.ListFields()[0][0].name == "pinAction"


def test_an_archive_is_whatsmeow_s_build_archive_and_unpins() -> None:
    (patch,) = patches(command(archived=True), NOW)
    assert patch.Type == PatchInfo.REGULAR_LOW
    archive, unpin = patch.Mutations
    assert (list(archive.Index), archive.Version) == (
        ["archive", "5511999999999@s.whatsapp.net"],
        3,
    )
    assert archive.Value.archiveChatAction.archived is True
    assert archive.Value.archiveChatAction.messageRange.lastMessageTimestamp == 1_794_999_000
    assert (list(unpin.Index), unpin.Version, unpin.Value.pinAction.pinned) == (
        ["pin_v1", "5511999999999@s.whatsapp.net"],
        5,
        False,
    )
    (unarchive,) = patches(command(archived=False), NOW)
    assert len(unarchive.Mutations) == 1
    assert unarchive.Mutations[0].Value.archiveChatAction.archived is False


def test_a_mute_is_whatsmeow_s_build_mute_abs_in_milliseconds() -> None:
    (patch,) = patches(command(mute=True, muted_until=NOW + 3600), NOW)
    assert patch.Type == PatchInfo.REGULAR_HIGH
    (only,) = patch.Mutations
    assert (list(only.Index), only.Version) == (["mute", "5511999999999@s.whatsapp.net"], 2)
    action = only.Value.muteAction
    assert (action.muted, action.muteEndTimestamp) == (True, int((NOW + 3600) * 1000))
    (forever,) = patches(command(mute=True, muted_until=float(MUTED_FOREVER)), NOW)
    assert forever.Mutations[0].Value.muteAction.muteEndTimestamp == -1
    (unmute,) = patches(command(mute=True, muted_until=None), NOW)
    assert unmute.Mutations[0].Value.muteAction.muted is False
    assert not unmute.Mutations[0].Value.muteAction.HasField("muteEndTimestamp")


def test_each_setting_is_its_own_patch_and_nothing_set_is_no_patch() -> None:
    assert patches(command(), NOW) == []
    found = patches(command(pinned=True, archived=False, mute=True, muted_until=None), NOW)
    assert [p.Type for p in found] == [
        PatchInfo.REGULAR_LOW,
        PatchInfo.REGULAR_LOW,
        PatchInfo.REGULAR_HIGH,
    ]
    for patch in found:  # what neonize dereferences unchecked
        assert patch.HasField("Timestamp")
        assert patch.HasField("Type")
        assert all(m.HasField("Version") for m in patch.Mutations)
