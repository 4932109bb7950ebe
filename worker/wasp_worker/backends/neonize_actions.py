"""The actions on a message (reaction, edit, delete for everyone, poll vote) as neonize's own
protobufs, built with neonize's own builders.

Pure where neonize is: an edit (`neonize.builder.build_edit`) and a revoke
(`neonize.builder.build_revoke`) need no session, so tests check the real protobufs
offline. A reaction (`NewClient.build_reaction`) and a vote (`NewClient.build_poll_vote`,
which encrypts the choice with the poll's secret from the session's store) go through
the client; what they are given (the target's JIDs, the poll's `MessageInfo`) is built
here, purely. The queue row's `details` say the target: `target` (its WhatsApp id),
`target_from_me`, `target_sender` (a JID) and the action's `emoji`, `text` or `options`.
Imported in the neonize cell only (the worker itself never loads the Go core).
"""

from __future__ import annotations

from typing import Any

from neonize.builder import build_edit, build_revoke
from neonize.proto.Neonize_pb2 import JID, MessageInfo, MessageSource
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
from neonize.utils import build_jid

from wasp_worker.backends.base import ACTIONS

KINDS = ACTIONS  # the actions on a sent message the cell applies
_NO_JID = JID(User="", Server="", RawAgent=0, Device=0, Integrator=0, IsEmpty=True)


def jid(text: str) -> JID:
    """A JID from its text (`user@server`); the device part of `user:device` is dropped."""
    user, _, server = text.partition("@")
    return build_jid(user.partition(":")[0], server or "s.whatsapp.net")


def target_sender(details: dict[str, Any], me: JID) -> JID:
    """Who sent the message the action is on: the account itself, or the JID stored."""
    if details.get("target_from_me"):
        return me
    return jid(str(details["target_sender"]))


def edit(chat: JID, details: dict[str, Any]) -> Message:
    """The new text of a message the account sent (WhatsApp's MESSAGE_EDIT)."""
    return build_edit(chat, str(details["target"]), Message(conversation=str(details["text"])))


def revoke(chat: JID, details: dict[str, Any], me: JID) -> Message:
    """A delete for everyone (REVOKE): the account's own message, or (a group's admin)
    another member's, whose sender the key then names as its participant."""
    return build_revoke(chat, target_sender(details, me), str(details["target"]), me)


def poll_info(chat: JID, details: dict[str, Any], me: JID) -> MessageInfo:
    """The poll's `MessageInfo` as `build_poll_vote` takes it (every field proto2 requires
    set): its chat, sender and id are what the vote's encryption is keyed with."""
    source = MessageSource(
        Chat=chat,
        Sender=target_sender(details, me),
        IsFromMe=bool(details.get("target_from_me")),
        IsGroup=chat.Server == "g.us",
        SenderAlt=_NO_JID,
        RecipientAlt=_NO_JID,
        BroadcastListOwner=_NO_JID,
    )
    return MessageInfo(
        ID=str(details["target"]),
        MessageSource=source,
        ServerID=0,
        Type="poll",
        Pushname="",
        Timestamp=0,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
    )


def build(client: Any, kind: str, chat: JID, details: dict[str, Any], me: JID) -> Message:
    """The action's message, with neonize's builders (`client`: the session's NewClient)."""
    if kind == "reaction":
        sender = target_sender(details, me)
        built: Message = client.build_reaction(
            chat, sender, str(details["target"]), str(details["emoji"])
        )
        return built
    if kind == "edit":
        return edit(chat, details)
    if kind == "delete":
        return revoke(chat, details, me)
    if kind == "vote":
        voted: Message = client.build_poll_vote(
            poll_info(chat, details, me), [str(o) for o in details["options"]]
        )
        return voted
    raise ValueError(f"not an action: {kind}")
