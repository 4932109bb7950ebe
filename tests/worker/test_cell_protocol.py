"""The cell protocol: every kind crosses a pipe intact, and the backend handles every event kind."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from dataclasses import FrozenInstanceError, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from wasp_worker.backends import cell_protocol as protocol
from wasp_worker.backends.base import (
    ChatSettingsChange,
    HistoryImport,
    MessageEdit,
    MessageReaction,
    MessageRevoke,
    PollVote,
    PresenceEvent,
    ReceiptEvent,
    RemoteChatSettings,
    StatusEvent,
)
from wasp_worker.backends.groups import NumberCheck
from wasp_worker.backends.neonize import NeonizeBackend, _Session
from wasp_worker.breaker import BadMacBreaker, BreakerSettings

from tests.worker.test_neonize_status import Seen, fake_cell
from wasp.slots import Slot

A1 = Slot.parse("A1")
FIELDS: protocol.InboundFields = {
    "slot": "A1",
    "from": "5511999999999",
    "to": "5511000000001@s.whatsapp.net",
    "body": "hi",
    "chat_id": "5511999999999@s.whatsapp.net",
    "chat_type": "direct",
    "sender_jid_raw": "5511999999999@s.whatsapp.net",
    "push_name": None,
    "wa_message_id": "3EB0X",
    "timestamp": 1_795_000_000,
    "media_type": None,
    "media_url": None,
    "mime_type": None,
    "file_name": None,
    "file_size": None,
    "from_me": False,
    "sender_lid": None,
    "sender_phone_jid": "5511999999999@s.whatsapp.net",
    "message_type": "poll",
    "quoted_id": "3EB0QUOTED",
    "mentions": ["5511000000001@s.whatsapp.net"],
    "location": None,
    "contacts": None,
    "poll": {"question": "Lunch?", "options": ["pizza", "sushi"], "selectable_count": 1},
}

COMMANDS: list[protocol.Command] = [
    protocol.Start("A1", "/auth/A1/session.sqlite3", "/work"),
    protocol.Stop("A1"),
    protocol.Send(1, "A1", "5511999999999@s.whatsapp.net", "image", "look", b"\xff", None, None),
    protocol.Pair(2, "A1", "5511999999999"),
    protocol.MarkRead(3, "A1", "120363012345678901@g.us", "5511999999999@s.whatsapp.net", ("X",)),
    protocol.LookupLid(4, "A1", "190000000000123@lid"),
    protocol.SetChatSettings(5, "A1", "5511999999999@s.whatsapp.net", True, None, True, None, 1.0),
    protocol.ReadChatSettings("A1", ("5511999999999@s.whatsapp.net",)),
    protocol.SubscribePresence(17, "A1", "5511999999999@s.whatsapp.net"),
    protocol.SendPresence(18, "A1", "5511999999999@s.whatsapp.net", "recording"),
    # groups and contacts
    protocol.JoinedGroups(6, "A1"),
    protocol.GetGroupInfo(7, "A1", "120363012345678901@g.us"),
    protocol.CreateGroup(8, "A1", "Team", ("5511999999999@s.whatsapp.net",)),
    protocol.RenameGroup(9, "A1", "120363012345678901@g.us", "Team 2"),
    protocol.UpdateParticipants(
        10, "A1", "120363012345678901@g.us", "promote", ("5511999999999@s.whatsapp.net",)
    ),
    protocol.GetInviteLink(11, "A1", "120363012345678901@g.us", True),
    protocol.LeaveGroup(12, "A1", "120363012345678901@g.us"),
    protocol.CheckNumbers(13, "A1", ("5511999999999",)),
    protocol.GetPicture(14, "A1", "5511999999999@s.whatsapp.net"),
    protocol.GetUserInfo(15, "A1", "5511999999999@s.whatsapp.net"),
    protocol.SetBlocked(16, "A1", "5511999999999@s.whatsapp.net", True),
]
CHAT = "5511999999999@s.whatsapp.net"
HISTORY_CHAT: protocol.HistoryChat = {
    "chat_id": CHAT,
    "name": None,
    "pinned": True,
    "archived": False,
    "muted_until": None,
    "unread": 1,
}
HISTORY_CONTACT: protocol.HistoryContact = {
    "phone_jid": CHAT,
    "lid": None,
    "name": None,
    "push_name": "Ana",
}

# One of each event kind, and what handling it must show (a status, a receipt, an answer).
SAMPLES: dict[type, protocol.Event] = {
    protocol.Qr: protocol.Qr("A1", "2@code"),
    protocol.Connected: protocol.Connected("A1"),
    protocol.Disconnected: protocol.Disconnected("A1"),
    protocol.LoggedOut: protocol.LoggedOut("A1", True, 401, "LOGGED_OUT"),
    protocol.StreamReplaced: protocol.StreamReplaced("A1"),
    protocol.TemporaryBan: protocol.TemporaryBan("A1", 101, "SEND_TO_TOO_MANY_PEOPLE", 60),
    protocol.ConnectFailure: protocol.ConnectFailure("A1", 400, "GENERIC", ""),
    protocol.ClientOutdated: protocol.ClientOutdated("A1"),
    protocol.KeepAliveTimeout: protocol.KeepAliveTimeout("A1", 1, 1_795_000_000),
    protocol.KeepAliveRestored: protocol.KeepAliveRestored("A1"),
    protocol.StreamError: protocol.StreamError("A1", "503"),
    protocol.Undecryptable: protocol.Undecryptable("A1", False),
    protocol.Message: protocol.Message("A1", FIELDS),
    protocol.Receipt: protocol.Receipt("A1", "5511999999999@s.whatsapp.net", ("X",), "read", 1),
    protocol.MessageEdited: protocol.MessageEdited("A1", CHAT, "3EB0X", "new", 2),
    protocol.MessageRevoked: protocol.MessageRevoked("A1", CHAT, "3EB0X", 3),
    protocol.Reaction: protocol.Reaction("A1", CHAT, "3EB0X", CHAT, "👍", False, 4.0),
    protocol.PollUpdate: protocol.PollUpdate("A1", CHAT, "3EB0POLL", CHAT, ("ab" * 32,), 5.0),
    protocol.PresenceSeen: protocol.PresenceSeen("A1", CHAT, CHAT, "recording", 6.0),
    protocol.HistorySynced: protocol.HistorySynced(
        "A1",
        ({**FIELDS, "read": False},),
        (HISTORY_CHAT,),
        (HISTORY_CONTACT,),
        (protocol.Reaction("A1", CHAT, "3EB0X", CHAT, "🔥", False, 7.0),),
        (protocol.PollUpdate("A1", CHAT, "3EB0X", CHAT, ("cd" * 32,), 8.0),),
    ),
    protocol.OfflineSyncCompleted: protocol.OfflineSyncCompleted("A1"),
    protocol.ChatSettingsSeen: protocol.ChatSettingsSeen(
        "A1", (protocol.ChatSetting(CHAT, False, True, 9.0),)
    ),
    protocol.Ended: protocol.Ended("A1", "stopped"),
    protocol.SendResult: protocol.SendResult(7, "sent", "3EB0X"),
    protocol.PairResult: protocol.PairResult(7, True, "ABCD-EFGH"),
    protocol.MarkReadResult: protocol.MarkReadResult(7, True, ""),
    protocol.LookupResult: protocol.LookupResult(7, True, "5511999999999@s.whatsapp.net"),
    protocol.ChatSettingsResult: protocol.ChatSettingsResult(7, False, "app_state_error"),
    protocol.PresenceResult: protocol.PresenceResult(7, False, "not_connected"),
    protocol.GroupsResult: protocol.GroupsResult(
        7, (NumberCheck("5511999999999", True, "5511999999999@s.whatsapp.net"),)
    ),
    protocol.CellDied: protocol.CellDied(5, None),  # a cell the backend does not have
}
REPLIES = (
    protocol.SendResult,
    protocol.PairResult,
    protocol.MarkReadResult,
    protocol.LookupResult,
    protocol.ChatSettingsResult,
    protocol.PresenceResult,
    protocol.GroupsResult,
)
# What the backend hands on_remote for each kind that changes the store.
REMOTE = {
    protocol.MessageEdited: [MessageEdit(A1, CHAT, "3EB0X", "new", 2)],
    protocol.MessageRevoked: [MessageRevoke(A1, CHAT, "3EB0X", 3)],
    protocol.Reaction: [MessageReaction(A1, CHAT, "3EB0X", CHAT, "👍", False, 4.0)],
    # The hashes go on to the store, which alone knows the poll's option names.
    protocol.PollUpdate: [PollVote(A1, CHAT, "3EB0POLL", CHAT, ("sha256:" + "ab" * 32,), 5.0)],
    protocol.HistorySynced: [
        HistoryImport(
            A1,
            ({**FIELDS, "read": False},),
            (dict(HISTORY_CHAT),),
            (dict(HISTORY_CONTACT),),
            (MessageReaction(A1, CHAT, "3EB0X", CHAT, "🔥", False, 7.0),),
            (PollVote(A1, CHAT, "3EB0X", CHAT, ("sha256:" + "cd" * 32,), 8.0),),
        )
    ],
    protocol.ChatSettingsSeen: [
        RemoteChatSettings(A1, CHAT, ChatSettingsChange(False, True, True, 9.0))
    ],
}


def test_every_event_kind_has_a_sample() -> None:
    """A new kind in the union fails here until it has a sample (and so a handling test)."""
    assert set(SAMPLES) == set(get_args(protocol.Event))
    assert len(get_args(protocol.Command)) == len(COMMANDS)


@pytest.mark.parametrize("message", [*COMMANDS, *SAMPLES.values()], ids=lambda m: type(m).__name__)
def test_every_kind_is_frozen_and_crosses_a_pipe(message: Any) -> None:
    assert is_dataclass(message)
    with pytest.raises(FrozenInstanceError):
        setattr(message, fields(message)[0].name, None)
    if not isinstance(message, protocol.CellDied):  # made on the worker's side only
        assert pickle.loads(pickle.dumps(message)) == message
        assert {f.name for f in fields(message)} == set(vars(message))


async def known_chats(slot: Slot) -> list[str]:
    return [CHAT]


@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda kind: kind.__name__)
async def test_the_backend_handles_every_event_kind(kind: type, tmp_path: Path) -> None:
    seen = Seen()
    backend = NeonizeBackend(
        tmp_path,
        sleep=seen.sleep,
        on_inbound=seen.on_inbound,
        on_receipt=seen.on_receipt,
        on_remote=seen.on_remote,
        known_chats=known_chats,
    )
    presences: list[PresenceEvent] = []

    async def on_presence(event: PresenceEvent) -> None:
        presences.append(event)

    backend.on_presence = on_presence
    session = _Session(seen.on_status, BadMacBreaker(BreakerSettings(threshold=0)))
    session.connected = True
    backend.sessions[A1] = session
    backend.cells[0], backend.placement[A1] = fake_cell(), 0
    reply: asyncio.Future[protocol.Reply] = asyncio.get_running_loop().create_future()
    backend._pending[7] = (0, reply)
    event = SAMPLES[kind]
    await backend.handle(event)  # an unhandled kind fails the match's assert_never
    await asyncio.gather(*backend._reads)
    if kind in REPLIES:
        assert reply.result() == event
    elif kind is protocol.Message:
        assert seen.inbound == [FIELDS]
    elif kind is protocol.Receipt:
        assert seen.receipts == [
            ReceiptEvent(A1, "5511999999999@s.whatsapp.net", ("X",), "read", 1)
        ]
    elif kind is protocol.CellDied:
        assert not reply.done()  # another cell's death fails none of this cell's requests
    elif kind in REMOTE:
        assert seen.remote == REMOTE[kind]
    elif kind is protocol.PresenceSeen:
        assert presences == [PresenceEvent(A1, CHAT, CHAT, "recording", 6.0)]
    elif kind is protocol.OfflineSyncCompleted:
        # whatsmeow's record of the known chats' settings is read again.
        assert backend.cells[0].conn.commands == [  # type: ignore[attr-defined]
            protocol.ReadChatSettings("A1", (CHAT,))
        ]
    else:
        assert seen.events, f"{kind.__name__} reported no status"
        assert all(isinstance(e, StatusEvent) and e.slot == A1 for e in seen.events)
    await backend.close()


def test_the_worker_side_imports_no_neonize() -> None:
    """The protocol, the translations and the backend load in the worker, which must not
    load neonize (its Go core aborts the process it lives in)."""
    code = (
        "import sys\n"
        "import wasp_worker.backends.cell_protocol, wasp_worker.backends.neonize_events\n"
        "import wasp_worker.backends.neonize\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'neonize'], 'neonize loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
