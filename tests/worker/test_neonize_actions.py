"""The actions on a message as neonize's real protobufs (built offline, no WhatsApp): edits
and revokes with neonize's pure builders in the test's process, reactions with the
client's builder in a process of their own (the Go core is loaded there, as in a cell),
and the poll's `MessageInfo` a vote is encrypted against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from neonize.proto.Neonize_pb2 import MessageInfo
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ProtocolMessage
from neonize.utils import build_jid
from wasp_worker.backends import neonize_actions

ME = build_jid("5511000000001")
PEER = "5511000000002@s.whatsapp.net"
GROUP = build_jid("120363025246125486", "g.us")


def test_an_edit_is_a_message_edit_of_the_account_s_own_message() -> None:
    built = neonize_actions.edit(
        build_jid("5511000000002"), {"target": "3EB0AAA", "text": "the typo"}
    )
    protocol = built.editedMessage.message.protocolMessage
    assert protocol.type == ProtocolMessage.MESSAGE_EDIT
    assert (protocol.key.ID, protocol.key.remoteJID, protocol.key.fromMe) == (
        "3EB0AAA",
        PEER,
        True,
    )
    assert protocol.editedMessage.conversation == "the typo"
    assert protocol.timestampMS > 0
    assert Message.FromString(built.SerializeToString()) == built  # a whole, valid protobuf


def test_a_revoke_names_the_sender_of_another_member_s_message_in_a_group() -> None:
    own = neonize_actions.revoke(
        build_jid("5511000000002"), {"target": "3EB0AAA", "target_from_me": True}, ME
    )
    assert own.protocolMessage.type == ProtocolMessage.REVOKE
    assert (own.protocolMessage.key.ID, own.protocolMessage.key.fromMe) == ("3EB0AAA", True)
    assert not own.protocolMessage.key.participant
    theirs = neonize_actions.revoke(
        GROUP,
        {"target": "3EB0BBB", "target_from_me": False, "target_sender": PEER},
        ME,
    )
    key = theirs.protocolMessage.key
    assert (key.ID, key.fromMe, key.remoteJID, key.participant) == (
        "3EB0BBB",
        False,
        "120363025246125486@g.us",
        PEER,
    )


def test_a_vote_s_poll_info_is_whole_and_names_the_poll() -> None:
    info = neonize_actions.poll_info(
        GROUP, {"target": "3EB0POLL", "target_from_me": False, "target_sender": PEER}, ME
    )
    again = MessageInfo.FromString(info.SerializeToString())  # proto2: every field required
    source = again.MessageSource
    assert again.ID == "3EB0POLL"
    assert (source.Chat.User, source.Chat.Server, source.IsGroup) == (
        "120363025246125486",
        "g.us",
        True,
    )
    assert (source.Sender.User, source.IsFromMe) == ("5511000000002", False)
    own = neonize_actions.poll_info(ME, {"target": "3EB0P2", "target_from_me": True}, ME)
    assert (own.MessageSource.Sender.User, own.MessageSource.IsFromMe) == ("5511000000001", True)


REACTION_SCRIPT = """
import sys
from neonize.client import NewClient
from neonize.utils import build_jid
from wasp_worker.backends import neonize_actions
client = NewClient(sys.argv[1], uuid="A1")
me = build_jid("5511000000001")
chat = build_jid(*sys.argv[2].split("@"))
details = {"target": "3EB0CCC", "emoji": sys.argv[3], "target_from_me": False,
           "target_sender": "5511000000002@s.whatsapp.net"}
built = neonize_actions.build(client, "reaction", chat, details, me)
sys.stdout.write(built.SerializeToString().hex())
"""


def reaction(tmp_path: Path, chat: str, emoji: str) -> Message:
    """A reaction built by the client's own builder, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", REACTION_SCRIPT, str(tmp_path / "session.db"), chat, emoji],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return Message.FromString(bytes.fromhex(done.stdout.strip().splitlines()[-1]))


def test_a_reaction_and_its_removal_are_reaction_messages_on_the_target(tmp_path: Path) -> None:
    built = reaction(tmp_path, "120363025246125486@g.us", "👍🏽")
    key = built.reactionMessage.key
    assert built.reactionMessage.text == "👍🏽"
    assert (key.ID, key.remoteJID, key.fromMe, key.participant) == (
        "3EB0CCC",
        "120363025246125486@g.us",
        False,
        PEER,  # another member's message in a group: the key names its sender
    )
    removed = reaction(tmp_path, PEER, "")
    assert removed.HasField("reactionMessage")
    assert removed.reactionMessage.text == ""
    assert removed.reactionMessage.key.remoteJID == PEER
