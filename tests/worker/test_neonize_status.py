"""What the neonize backend makes of whatsmeow's events: neonize's real event objects,
translated as the cell does, handled by the backend with a recording cell in place of a
process. Statuses, auth wipes, holds and reconnects; receipts and read receipts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from neonize.proto.Neonize_pb2 import JID, ConnectFailureReason, MessageSource
from neonize.proto.Neonize_pb2 import ClientOutdated as ClientOutdatedEv
from neonize.proto.Neonize_pb2 import Connected as ConnectedEv
from neonize.proto.Neonize_pb2 import ConnectFailure as ConnectFailureEv
from neonize.proto.Neonize_pb2 import Disconnected as DisconnectedEv
from neonize.proto.Neonize_pb2 import KeepAliveRestored as KeepAliveRestoredEv
from neonize.proto.Neonize_pb2 import KeepAliveTimeout as KeepAliveTimeoutEv
from neonize.proto.Neonize_pb2 import LoggedOut as LoggedOutEv
from neonize.proto.Neonize_pb2 import Receipt as ReceiptEv
from neonize.proto.Neonize_pb2 import StreamError as StreamErrorEv
from neonize.proto.Neonize_pb2 import StreamReplaced as StreamReplacedEv
from neonize.proto.Neonize_pb2 import TemporaryBan as TemporaryBanEv
from neonize.proto.Neonize_pb2 import UndecryptableMessage as UndecryptableMessageEv
from wasp_worker.backends.base import ReceiptEvent, RemoteChange, StatusEvent
from wasp_worker.backends.cell_protocol import (
    CellDied,
    Command,
    Connected,
    Disconnected,
    Ended,
    LookupLid,
    LookupResult,
    MarkRead,
    MarkReadResult,
    ReadChatSettings,
    Start,
    Stop,
)
from wasp_worker.backends.neonize import BAN_WITHOUT_EXPIRY_S, Cell, NeonizeBackend, _Session
from wasp_worker.backends.neonize_events import TRANSLATORS
from wasp_worker.breaker import BadMacBreaker, BreakerSettings

from wasp.slots import Slot

A1 = Slot.parse("A1")
WALL = 1_795_000_000.0  # 2026-11-18T11:06:40Z


class Seen:
    def __init__(self) -> None:
        self.events: list[StatusEvent] = []
        self.inbound: list[dict[str, Any]] = []
        self.receipts: list[ReceiptEvent] = []
        self.remote: list[RemoteChange] = []
        self.delays: list[float] = []

    async def on_status(self, event: StatusEvent) -> None:
        self.events.append(event)

    async def on_inbound(self, fields: dict[str, Any]) -> None:
        self.inbound.append(fields)

    async def on_receipt(self, event: ReceiptEvent) -> None:
        self.receipts.append(event)

    async def on_remote(self, change: RemoteChange) -> None:
        self.remote.append(change)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)  # the clock is ours: no real waiting

    @property
    def last(self) -> StatusEvent:
        return self.events[-1]


class FakeConn:
    """A cell's pipe end that records commands and may answer them."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.answer: Any = None

    def send(self, command: Command) -> None:
        self.commands.append(command)
        if self.answer is not None:
            self.answer(command)

    def close(self) -> None:
        pass


class FakeProcess:
    pid = 0

    def kill(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


def fake_cell() -> Cell:
    return Cell(0, FakeProcess(), FakeConn())  # type: ignore[arg-type]


def setup(tmp_path: Path, *, connected: bool = True) -> tuple[NeonizeBackend, Seen, FakeConn]:
    seen = Seen()
    backend = NeonizeBackend(
        tmp_path,
        sleep=seen.sleep,
        wall=lambda: WALL,
        on_inbound=seen.on_inbound,
        on_receipt=seen.on_receipt,
    )
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
    backend.sessions[A1].connected = connected
    cell = fake_cell()
    backend.cells[0], backend.placement[A1] = cell, 0
    backend.auth_dir(A1).mkdir(parents=True)
    (backend.auth_dir(A1) / "session.sqlite3").write_bytes(b"store")
    assert isinstance(cell.conn, FakeConn)
    return backend, seen, cell.conn


async def feed(backend: NeonizeBackend, event: Any) -> None:
    """Translate a neonize event as the cell does, then handle it as the backend does."""
    translated = TRANSLATORS[f"{type(event).DESCRIPTOR.name}Ev"]("A1", event)
    if translated is not None:
        await backend.handle(translated)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_logout_says_why_wipes_the_auth_and_stops_the_session(tmp_path: Path) -> None:
    backend, seen, cell = setup(tmp_path)
    await feed(backend, LoggedOutEv(OnConnect=True, Reason=ConnectFailureReason.UNKNOWN_LOGOUT))
    assert seen.last == StatusEvent(
        A1,
        "DISCONNECTED",
        reason="logged_out",
        logged_out=True,
        detail={"code": 406, "name": "UNKNOWN_LOGOUT", "on_connect": True},
    )
    assert not backend.auth_dir(A1).exists()
    assert cell.commands == [Stop("A1")]  # whatsmeow would leave connect() hanging
    await backend.handle(Ended("A1", "stopped"))
    await settle()
    assert (len(seen.events), seen.delays) == (1, [])
    await backend.close()


async def test_a_replaced_stream_is_not_fought_over(tmp_path: Path) -> None:
    backend, seen, cell = setup(tmp_path)
    await feed(backend, StreamReplacedEv())
    assert (seen.last.status, seen.last.reason, seen.last.logged_out) == (
        "DISCONNECTED",
        "stream_replaced",
        False,
    )
    assert (backend.auth_dir(A1) / "session.sqlite3").exists()  # still linked: keys kept
    await backend.handle(Ended("A1", "stopped"))
    await feed(backend, DisconnectedEv())
    await settle()
    assert seen.events == [seen.last]  # no DISCONNECTED "stopped" over the reason
    assert seen.delays == []  # and no reconnect: that would replace the other client back
    assert not any(isinstance(c, Start) for c in cell.commands)
    await backend.close()


async def test_a_temporary_ban_says_until_when_and_waits_it_out(tmp_path: Path) -> None:
    backend, seen, cell = setup(tmp_path)
    await feed(backend, TemporaryBanEv(Code=TemporaryBanEv.SEND_TO_TOO_MANY_PEOPLE, Expire=5400))
    assert seen.last == StatusEvent(
        A1,
        "DISCONNECTED",
        reason="temporary_ban",
        detail={
            "code": 101,
            "name": "SEND_TO_TOO_MANY_PEOPLE",
            "expire_s": 5400,
            "expires_at": "2026-11-18T12:36:40Z",
        },
    )
    await backend.handle(Ended("A1", "stopped"))
    await settle()
    assert seen.delays == [5400]  # the only wait: nothing connects before the expiry
    assert cell.commands[0] == Stop("A1")
    assert isinstance(cell.commands[-1], Start)  # once the wait is over
    assert seen.last.status == "CONNECTING"
    await backend.close()


async def test_a_ban_without_an_expiry_waits_an_hour(tmp_path: Path) -> None:
    backend, seen, _ = setup(tmp_path)
    await feed(backend, TemporaryBanEv(Code=TemporaryBanEv.BLOCKED_BY_USERS))
    detail = seen.events[0].detail
    assert detail is not None
    assert (detail["code"], detail["expire_s"], detail["expires_at"]) == (102, None, None)
    await settle()
    assert seen.delays == [BAN_WITHOUT_EXPIRY_S]
    await backend.close()


async def test_a_connect_failure_says_its_code_and_backs_off(tmp_path: Path) -> None:
    backend, seen, cell = setup(tmp_path)
    event = ConnectFailureEv(Reason=ConnectFailureReason.BAD_USER_AGENT, Message="bad agent")
    await feed(backend, event)
    assert seen.last == StatusEvent(
        A1,
        "DISCONNECTED",
        reason="connect_failure",
        detail={"code": 409, "name": "BAD_USER_AGENT", "message": "bad agent"},
    )
    assert (backend.auth_dir(A1) / "session.sqlite3").exists()
    await backend.handle(Ended("A1", "stopped"))
    await settle()
    assert seen.delays == [2]
    assert cell.commands[0] == Stop("A1")
    assert isinstance(cell.commands[-1], Start)
    await backend.close()


async def test_a_connect_failure_of_the_logout_class_unlinks(tmp_path: Path) -> None:
    backend, seen, _ = setup(tmp_path)
    await feed(backend, ConnectFailureEv(Reason=ConnectFailureReason.MAIN_DEVICE_GONE))
    assert (seen.last.reason, seen.last.logged_out) == ("connect_failure", True)
    assert seen.last.detail == {"code": 403, "name": "MAIN_DEVICE_GONE", "message": None}
    assert not backend.auth_dir(A1).exists()
    await settle()
    assert seen.delays == []
    await backend.close()


async def test_a_server_side_connect_failure_is_left_to_whatsmeow_s_reconnect(
    tmp_path: Path,
) -> None:
    backend, seen, cell = setup(tmp_path)
    await feed(backend, ConnectFailureEv(Reason=ConnectFailureReason.SERVICE_UNAVAILABLE))
    assert (seen.last.status, seen.last.reason) == ("DISCONNECTED", "connect_failure")
    assert cell.commands == []  # not stopped: whatsmeow reconnects after 500 and 503
    await feed(backend, ConnectedEv())
    assert (seen.last.status, seen.last.reason) == ("CONNECTED", None)
    await backend.close()


async def test_an_outdated_client_is_not_reconnected(tmp_path: Path) -> None:
    backend, seen, cell = setup(tmp_path)
    await feed(backend, ClientOutdatedEv())
    assert (seen.last.reason, seen.last.logged_out) == ("client_outdated", False)
    await backend.handle(Ended("A1", "stopped"))
    await settle()
    assert (seen.delays, cell.commands) == ([], [Stop("A1")])
    await backend.close()


async def test_a_keepalive_timeout_stays_connected_with_its_reason_until_restored(
    tmp_path: Path,
) -> None:
    backend, seen, cell = setup(tmp_path)
    await feed(backend, KeepAliveTimeoutEv(ErrorCount=2, LastSuccess=int(WALL)))
    assert seen.last == StatusEvent(
        A1,
        "CONNECTED",
        reason="keepalive_timeout",
        detail={"error_count": 2, "last_success": "2026-11-18T11:06:40Z"},
    )
    assert backend.sessions[A1].connected is True  # sends still go to the open socket
    await feed(backend, KeepAliveRestoredEv())
    assert seen.last == StatusEvent(A1, "CONNECTED")
    assert cell.commands == []
    await backend.close()


async def test_keepalive_news_of_a_dropped_session_is_no_status(tmp_path: Path) -> None:
    backend, seen, _ = setup(tmp_path, connected=False)
    await feed(backend, KeepAliveTimeoutEv(ErrorCount=1))
    await feed(backend, KeepAliveRestoredEv())
    assert seen.events == []
    await backend.close()


async def test_a_stream_error_other_than_515_keeps_the_auth(tmp_path: Path) -> None:
    backend, seen, _ = setup(tmp_path)
    await feed(backend, StreamErrorEv(Code="503"))
    assert seen.last == StatusEvent(
        A1, "DISCONNECTED", reason="stream_error_503", detail={"code": "503"}
    )
    assert backend.auth_dir(A1).exists()
    await feed(backend, StreamErrorEv(Code="515"))
    assert (seen.last.reason, seen.last.logged_out) == ("stream_error_515", True)
    assert not backend.auth_dir(A1).exists()
    await backend.close()


async def test_messages_never_sent_to_this_device_do_not_trip_the_bad_mac_breaker(
    tmp_path: Path,
) -> None:
    backend, seen, _ = setup(tmp_path)
    backend.sessions[A1].breaker = BadMacBreaker(BreakerSettings(threshold=1))
    for _ in range(5):
        await feed(backend, UndecryptableMessageEv(IsUnavailable=True))
    assert seen.events == []
    for _ in range(2):
        await feed(backend, UndecryptableMessageEv())
    assert (seen.last.reason, seen.last.logged_out) == ("bad_mac_breaker", True)
    await backend.close()


def _receipt(kind: int, *, from_me: bool = False) -> ReceiptEv:
    contact = JID(User="5511999999999", Server="s.whatsapp.net")
    return ReceiptEv(
        MessageSource=MessageSource(Chat=contact, Sender=contact, IsFromMe=from_me),
        MessageIDs=["3EB0A"],
        Timestamp=int(WALL),
        Type=kind,
    )


async def test_receipts_of_sent_messages_reach_on_receipt(tmp_path: Path) -> None:
    backend, seen, _ = setup(tmp_path)
    await feed(backend, _receipt(ReceiptEv.DELIVERED))
    await feed(backend, _receipt(ReceiptEv.READ_SELF, from_me=True))  # we read on the phone
    await feed(backend, _receipt(ReceiptEv.PLAYED))
    chat = "5511999999999@s.whatsapp.net"
    assert seen.receipts == [
        ReceiptEvent(A1, chat, ("3EB0A",), "delivered", int(WALL)),
        ReceiptEvent(A1, chat, ("3EB0A",), "played", int(WALL)),
    ]
    assert seen.events == []
    await backend.close()


async def test_mark_read_asks_the_cell_and_returns_once_it_answers(tmp_path: Path) -> None:
    backend, _, cell = setup(tmp_path)

    def answer(command: Command) -> None:
        if not isinstance(command, MarkRead):
            return
        reply = MarkReadResult(command.request_id, True, "")
        asyncio.get_running_loop().call_soon(asyncio.ensure_future, backend.handle(reply))

    cell.answer = answer
    group, sender = "120363012345678901@g.us", "5511999999999@s.whatsapp.net"
    await backend.mark_read(A1, group, sender, ["3EB0A", "3EB0B"])
    assert cell.commands == [MarkRead(1, "A1", group, sender, ("3EB0A", "3EB0B"))]
    await backend.close()


async def test_mark_read_raises_when_the_cell_refuses(tmp_path: Path) -> None:
    backend, _, cell = setup(tmp_path)

    def refuse(command: Command) -> None:
        if not isinstance(command, MarkRead):
            return
        reply = MarkReadResult(command.request_id, False, "mark_read_error: MarkReadError")
        asyncio.get_running_loop().call_soon(asyncio.ensure_future, backend.handle(reply))

    cell.answer = refuse
    with pytest.raises(RuntimeError, match="MarkReadError"):
        await backend.mark_read(A1, "5511999999999@s.whatsapp.net", None, ["3EB0A"])
    await backend.close()


async def test_mark_read_raises_when_the_cell_dies_or_stays_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wasp_worker.backends.neonize as module

    backend, _, cell = setup(tmp_path)

    def die(_: Command) -> None:
        gone = CellDied(0, object())  # the reader's word; not its process, so no respawn
        asyncio.get_running_loop().call_soon(asyncio.ensure_future, backend.handle(gone))

    cell.answer = die
    with pytest.raises(RuntimeError, match="cell_died"):
        await backend.mark_read(A1, "5511999999999@s.whatsapp.net", None, ["3EB0A"])
    cell.answer = None
    monkeypatch.setattr(module, "SEND_TIMEOUT_S", 0.01)
    with pytest.raises(RuntimeError, match="mark_read_timeout"):
        await backend.mark_read(A1, "5511999999999@s.whatsapp.net", None, ["3EB0A"])
    await backend.close()


async def test_mark_read_refuses_without_a_connection_or_a_group_sender(tmp_path: Path) -> None:
    backend, _, cell = setup(tmp_path, connected=False)
    with pytest.raises(RuntimeError, match="not_connected"):
        await backend.mark_read(A1, "5511999999999@s.whatsapp.net", None, ["3EB0A"])
    backend.sessions[A1].connected = True
    with pytest.raises(RuntimeError, match="sender"):
        await backend.mark_read(A1, "120363012345678901@g.us", None, ["3EB0A"])
    assert cell.commands == []
    await backend.close()


async def test_a_dead_cell_fails_its_requests_in_flight(tmp_path: Path) -> None:
    backend, _, _ = setup(tmp_path)
    loop = asyncio.get_running_loop()
    ours, other = loop.create_future(), loop.create_future()
    backend._pending.update({1: (0, ours), 2: (1, other)})
    await backend.handle(CellDied(0, object()))  # not the cell's process: no restart
    with pytest.raises(RuntimeError, match="cell_died"):
        ours.result()
    assert not other.done()
    await backend.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("5511999999999@s.whatsapp.net", "5511999999999@s.whatsapp.net"), ("", None)],
)
async def test_a_lid_is_looked_up_in_the_sessions_store_through_the_cell(
    tmp_path: Path, answer: str, expected: str | None
) -> None:
    backend, _, cell = setup(tmp_path)

    def reply(command: Command) -> None:
        if isinstance(command, LookupLid):
            result = LookupResult(command.request_id, True, answer)
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, backend.handle(result))

    cell.answer = reply
    assert await backend.phone_for_lid(A1, "190000000000123@lid") == expected
    assert cell.commands == [LookupLid(1, "A1", "190000000000123@lid")]
    await backend.close()


async def test_a_lid_lookup_raises_when_the_session_cannot_look(tmp_path: Path) -> None:
    backend, _, cell = setup(tmp_path, connected=False)
    with pytest.raises(RuntimeError, match="not_connected"):
        await backend.phone_for_lid(A1, "190000000000123@lid")
    assert cell.commands == []
    backend.sessions[A1].connected = True

    def refuse(command: Command) -> None:
        if isinstance(command, LookupLid):
            result = LookupResult(command.request_id, False, "lookup_error: GetJIDFromStoreError")
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, backend.handle(result))

    cell.answer = refuse
    with pytest.raises(RuntimeError, match="GetJIDFromStoreError"):
        await backend.phone_for_lid(A1, "190000000000123@lid")
    await backend.close()


async def test_the_phone_s_chat_settings_are_read_at_a_connect_and_again_while_connected(
    tmp_path: Path,
) -> None:
    backend, _, conn = setup(tmp_path, connected=False)
    chats = ["5511999999999@s.whatsapp.net"]

    async def known_chats(slot: Slot) -> list[str]:
        return chats

    backend.known_chats, backend.settings_every_s = known_chats, 0.02

    def reads() -> int:
        return sum(isinstance(c, ReadChatSettings) for c in conn.commands)

    await backend.handle(Connected("A1"))
    await asyncio.sleep(0.2)
    assert reads() >= 4  # at the connect, then every 0.02 s
    assert conn.commands[-1] == ReadChatSettings("A1", tuple(chats))
    await backend.handle(Disconnected("A1"))
    await asyncio.sleep(0.05)
    before = reads()
    await asyncio.sleep(0.1)
    assert reads() == before  # not while disconnected
    reader = backend.sessions[A1].settings_reader
    await backend.stop(A1)
    await asyncio.sleep(0)
    assert reader is not None
    assert reader.cancelled() or reader.done()
