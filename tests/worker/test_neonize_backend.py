"""The neonize backend offline: real neonize in real cells; WhatsApp is unreachable from here,
so every connect fails at once, which drives the backoff and the crash recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage
from wasp_worker.backends.base import ChatSettingsChange, SendFailed, StatusEvent
from wasp_worker.backends.cell_protocol import (
    Connected,
    Disconnected,
    Ended,
    LoggedOut,
    Message,
    ReadChatSettings,
    StreamError,
    Undecryptable,
)
from wasp_worker.backends.neonize import BACKOFF_S, NeonizeBackend, _Session
from wasp_worker.backends.neonize_events import inbound_fields
from wasp_worker.breaker import BadMacBreaker, BreakerSettings
from wasp_worker.queue import Outbound

from tests.worker.test_neonize_events import ME
from tests.worker.test_neonize_events import event as message_event
from wasp.slots import Slot

A1, A2 = Slot.parse("A1"), Slot.parse("A2")


class Recorder:
    def __init__(self) -> None:
        self.events: list[StatusEvent] = []
        self.delays: list[float] = []

    async def on_status(self, event: StatusEvent) -> None:
        self.events.append(event)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)  # the clock is ours: no real waiting
        await asyncio.sleep(0.05)

    async def wait_for(self, predicate: object, within_s: float = 30) -> None:
        assert callable(predicate)
        for _ in range(int(within_s / 0.05)):
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"not reached; events: {self.events[-5:]}, delays: {self.delays}")


async def test_failed_connects_back_off_2_5_10_20_40_60_and_keep_the_store(tmp_path: Path) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    try:
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 8)
        assert seen.delays[:8] == [*BACKOFF_S, 60, 60]
        failed = [e for e in seen.events if e.status == "DISCONNECTED"]
        assert failed[0].reason == "connect_failed: NeonizeError"
        assert (tmp_path / "auth" / "A1" / "session.sqlite3").exists()
        assert backend.reconnects >= 7
    finally:
        await backend.close()


async def test_connected_resets_the_backoff(tmp_path: Path) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()), failures=4)
    await backend.handle(Connected("A1"))
    assert backend.sessions[A1].failures == 0
    assert seen.events[-1].status == "CONNECTED"
    backend._schedule_retry(A1, backend.sessions[A1], backend._next_backoff(backend.sessions[A1]))
    await asyncio.sleep(0)
    assert seen.delays[-1] == 2
    await backend.close()


async def test_a_connect_tells_who_the_account_is(tmp_path: Path) -> None:
    """The cell's Connected names the account's own JID: the reactor of its reactions and
    the admin compared with a group's; unknown before the first connect, kept through a
    reconnect that could not read it."""
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
    assert backend.account_jid(A1) is None
    await backend.handle(Connected("A1", "5511999990001@s.whatsapp.net"))
    assert backend.account_jid(A1) == "5511999990001@s.whatsapp.net"
    await backend.handle(Connected("A1"))
    assert backend.account_jid(A1) == "5511999990001@s.whatsapp.net"
    assert backend.account_jid(A2) is None
    await backend.close()


async def test_an_unlinked_account_is_forgotten_for_the_next_login(tmp_path: Path) -> None:
    """After the device was unlinked, the next login may be another account: a connect
    that could not read its JID must not be taken for the one before."""
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
    await backend.handle(Connected("A1", "5511999990001@s.whatsapp.net"))
    await backend.handle(LoggedOut("A1", on_connect=False, code=401, name="LOGGED_OUT"))
    assert backend.account_jid(A1) is None
    await backend.handle(Connected("A1"))
    assert backend.account_jid(A1) is None
    await backend.handle(Connected("A1", "5511999990002@s.whatsapp.net"))
    assert backend.account_jid(A1) == "5511999990002@s.whatsapp.net"
    await backend.close()


async def test_logged_out_and_stream_error_515_wipe_the_auth(tmp_path: Path) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    logout = LoggedOut("A1", on_connect=False, code=401, name="LOGGED_OUT")
    for slot, event in ((A1, logout), (A2, StreamError("A2", "515"))):
        auth = backend.auth_dir(slot)
        auth.mkdir(parents=True)
        (auth / "session.sqlite3").write_bytes(b"store")
        backend.sessions[slot] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
        await backend.handle(event)
        assert not auth.exists()
        assert seen.events[-1].logged_out is True
    assert [e.reason for e in seen.events] == ["logged_out", "stream_error_515"]
    await backend.close()


async def test_a_killed_cell_is_restarted_and_its_sessions_start_again(tmp_path: Path) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    try:
        await backend.start(A1, seen.on_status)
        await backend.start(A2, seen.on_status)
        assert len(backend.cells) == 1  # both sessions share one cell
        first = backend.cells[0].process
        await seen.wait_for(lambda: len(seen.delays) >= 2)
        os.kill(first.pid, signal.SIGKILL)
        await seen.wait_for(
            lambda: backend.cells[0].process is not first and backend.cells[0].process.is_alive()
        )
        assert backend.cells[0].restarts == 1
        before = len(seen.events)
        await seen.wait_for(
            lambda: {e.slot for e in seen.events[before:] if e.status == "CONNECTING"} == {A1, A2}
        )
    finally:
        await backend.close()
    assert not first.is_alive()


def test_breaker_trips_past_the_threshold_within_the_window_only() -> None:
    breaker = BadMacBreaker(BreakerSettings(threshold=3, window_s=10, cooldown_s=60))
    assert [breaker.record(t) for t in (0, 1, 2)] == [False, False, False]
    assert breaker.record(3) is True  # the 4th within 10 s: more than 3
    assert [breaker.record(t) for t in (100, 120, 140, 160)] == [False] * 4  # spread out


async def test_bad_mac_burst_drops_the_session_wipes_auth_and_waits_the_cooldown(
    tmp_path: Path,
) -> None:
    seen = Recorder()
    clock = [1000.0]
    settings = BreakerSettings(threshold=2, window_s=30, cooldown_s=300)
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep, now=lambda: clock[0], breaker=settings)
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(settings), connected=True)
    auth = backend.auth_dir(A1)
    auth.mkdir(parents=True)
    for _ in range(2):
        await backend.handle(Undecryptable("A1", unavailable=False))
        clock[0] += 1
    assert seen.events == []  # two are within the threshold
    await backend.handle(Undecryptable("A1", unavailable=False))
    assert seen.events[-1].status == "DISCONNECTED"
    assert seen.events[-1].reason == "bad_mac_breaker"
    assert not auth.exists()
    await backend.handle(Ended("A1", "stopped"))  # the cell confirms: no backoff retry
    await asyncio.sleep(0.01)
    assert seen.delays == [300]
    assert backend.breaker_trips == 1
    await backend.close()


async def test_a_disconnect_the_cell_reports_is_the_session_s_state(tmp_path: Path) -> None:
    """The cell's `disconnected` (whatsmeow's Disconnected event) is DISCONNECTED with its
    reason, and `connected` afterwards is CONNECTED again, without a retry of ours."""
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
    await backend.handle(Connected("A1"))
    await backend.handle(Disconnected("A1"))
    assert (seen.events[-1].status, seen.events[-1].reason) == ("DISCONNECTED", "disconnected")
    assert seen.events[-1].logged_out is False  # a dropped connection is not an unlink
    assert backend.sessions[A1].connected is False
    await backend.handle(Connected("A1"))
    assert seen.events[-1].status == "CONNECTED"
    assert seen.delays == []  # whatsmeow reconnects by itself: no backoff of ours
    await backend.close()


async def test_a_logout_from_the_phone_wipes_auth_and_says_the_account_is_unlinked(
    tmp_path: Path,
) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
    backend.auth_dir(A1).mkdir(parents=True)
    await backend.handle(Connected("A1"))
    await backend.handle(LoggedOut("A1", on_connect=False, code=401, name="LOGGED_OUT"))
    last = seen.events[-1]
    assert (last.status, last.reason, last.logged_out) == ("DISCONNECTED", "logged_out", True)
    assert not backend.auth_dir(A1).exists()
    await backend.handle(Ended("A1", "stopped"))  # the cell stopped it, as told
    await backend.handle(Disconnected("A1"))
    assert seen.events[-1] == last  # the unlink stays the reason: nothing reconnects
    assert seen.delays == []
    await backend.close()


async def test_inbound_messages_from_the_cell_reach_on_inbound(tmp_path: Path) -> None:
    seen = Recorder()
    received: list[dict[str, object]] = []
    fields = inbound_fields("A1", ME, message_event(E2EMessage(conversation="hi")))
    assert fields is not None

    async def on_inbound(fields: dict[str, object]) -> None:
        received.append(fields)

    backend = NeonizeBackend(tmp_path, sleep=seen.sleep, on_inbound=on_inbound)
    backend.sessions[A1] = _Session(seen.on_status, BadMacBreaker(BreakerSettings()))
    await backend.handle(Message("A1", fields))
    assert received == [fields]
    assert (received[0]["from_me"], received[0]["sender_phone_jid"]) == (
        False,
        "5511999999999@s.whatsapp.net",
    )
    await backend.close()


def _outbound(kind: str = "text", media_url: str | None = None) -> Outbound:
    return Outbound(
        1,
        "A1",
        "3EB0000000000000",
        "5511999999999@s.whatsapp.net",
        kind,
        "hi",
        media_url,
        None,
        "queued",
        None,
    )


async def test_send_without_a_live_connection_stays_queued(tmp_path: Path) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    try:
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 1)  # the offline connect failed
        with pytest.raises(RuntimeError, match="not_connected"):
            await backend.send(A1, _outbound())  # the cell answers: retry later, not failed
    finally:
        await backend.close()


async def test_media_that_cannot_be_fetched_fails_the_message_with_the_reason(
    tmp_path: Path,
) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    async with TestServer(web.Application()) as media:  # every path is a 404
        try:
            await backend.start(A1, seen.on_status)
            url = str(media.make_url("/missing.jpg"))
            with pytest.raises(SendFailed, match="media_download_failed: HTTP 404"):
                await backend.send(A1, _outbound("image", url))
        finally:
            await backend.close()


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452")  # a PNG's signature and header start


async def _streaming(body: bytes, content_type: str) -> TestServer:
    """A real HTTP server answering `body` in 64 KiB pieces, a pause between them (as a
    slow origin does: the body comes in many reads)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for start in range(0, len(body), 1 << 16):
            await response.write(body[start : start + (1 << 16)])
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/file", serve)
    return TestServer(app)


async def test_media_from_a_url_is_read_whole_and_held_to_its_kinds_limits(
    tmp_path: Path,
) -> None:
    """A URL's file is fetched to its end (not the first piece that arrived), then checked
    as an upload is before queueing: over the kind's limit or of a type the kind does not
    take, the message fails with the reason and never reaches the cell."""
    backend = NeonizeBackend(tmp_path)
    image = PNG + bytes(range(256)) * (3 * 4096)  # 3 MiB and a bit, in ~50 pieces
    async with await _streaming(image, "image/png") as origin:
        data, mime = await backend._fetch("image", str(origin.make_url("/file")), None)
    assert (data, mime) == (image, "image/png")
    # A document may be up to 100 MiB: more than any one read gives.
    async with await _streaming(image, "application/pdf") as origin:
        data, _ = await backend._fetch("document", str(origin.make_url("/file")), None)
    assert data == image

    seen = Recorder()
    try:
        await backend.start(A1, seen.on_status)
        too_big = PNG + bytes(500 * 1024)  # a sticker may be 500 KiB
        async with await _streaming(too_big, "image/webp") as origin:
            with pytest.raises(SendFailed, match=r"media_too_large: sticker: .* 500 KiB"):
                await backend.send(A1, _outbound("sticker", str(origin.make_url("/file"))))
        async with await _streaming(b"plain words, not a picture", "image/jpeg") as origin:
            with pytest.raises(SendFailed, match="media_type_refused: image: type unknown"):
                await backend.send(A1, _outbound("image", str(origin.make_url("/file"))))
    finally:
        await backend.close()


async def test_worker_runs_with_the_neonize_backend_offline(tmp_path: Path) -> None:
    import io

    from aiohttp.test_utils import TestClient, TestServer
    from wasp_worker.app import build_app
    from wasp_worker.events import EventLog

    from tests.support.worker import CREDENTIAL
    from tests.worker.test_worker_http import config

    log = EventLog(stream=io.StringIO())
    app = build_app(config(tmp_path, backend="neonize"), log)
    async with TestClient(TestServer(app), headers=CREDENTIAL) as worker:
        answer = await (await worker.post("/api/accounts/A1/connect")).json()
        assert answer["status"] == "CONNECTING"
        for _ in range(200):
            status = await (await worker.get("/api/accounts/A1/status")).json()
            if status["status"] == "DISCONNECTED":
                break
            await asyncio.sleep(0.05)
        assert status["status"] == "DISCONNECTED"  # WhatsApp is unreachable from here
        health = await (await worker.get("/health")).json()
        assert health["worker"]["active"] == 1  # the session is held and will retry
    assert any(
        e["event"] == "wa_status" and (e.get("reason") or "").startswith("connect_failed")
        for e in log.recent()
    )


async def test_pairing_is_refused_with_the_reason_when_no_login_runs(tmp_path: Path) -> None:
    from wasp_worker.backends.base import PairFailed

    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    try:
        with pytest.raises(PairFailed, match="connect it first"):
            await backend.pair(A1, "5511999999999")
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 1)  # offline: the connect ended
        with pytest.raises(PairFailed, match="no login in progress"):
            await backend.pair(A1, "5511999999999")
    finally:
        await backend.close()


async def test_mark_read_goes_through_a_real_cell_which_says_it_is_not_connected(
    tmp_path: Path,
) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    try:
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 1)  # offline: the connect ended
        backend.sessions[A1].connected = True  # as if still up: the cell must answer itself
        with pytest.raises(RuntimeError, match="not_connected"):
            await backend.mark_read(A1, "5511999999999@s.whatsapp.net", None, ["3EB0A"])
    finally:
        await backend.close()


async def test_chat_settings_go_through_a_real_cell_which_says_it_is_not_connected(
    tmp_path: Path,
) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    try:
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 1)  # offline: the connect ended
        backend.sessions[A1].connected = True  # as if still up: the cell must answer itself
        change = ChatSettingsChange(pinned=True, mute=True, muted_until=2e9)
        with pytest.raises(RuntimeError, match="not_connected"):
            await backend.send_chat_settings(A1, "5511999999999@s.whatsapp.net", change, None)
        # A read of whatsmeow's settings for a session that is not logged in is skipped, and
        # the cell lives on (a store lookup would abort it).
        backend._tell_cell(A1, ReadChatSettings("A1", ("5511999999999@s.whatsapp.net",)))
        with pytest.raises(RuntimeError, match="not_connected"):
            await backend.send_chat_settings(A1, "5511999999999@s.whatsapp.net", change, None)
        assert backend.cells[0].process.is_alive()
    finally:
        await backend.close()


def test_neonize_takes_the_built_patches_down_to_whatsmeow() -> None:
    """The installed neonize decodes each patch (a missing Timestamp or Version would abort
    its Go side) and hands it to whatsmeow, which, offline, has no client to send with."""
    code = (
        "from neonize.client import NewClient\n"
        "from wasp_worker.backends.cell_protocol import SetChatSettings\n"
        "from wasp_worker.backends.neonize_patches import patches\n"
        f"client = NewClient({str(Path('/nonexistent/none.sqlite3'))!r}, uuid='A1')\n"
        "command = SetChatSettings(1, 'A1', '5511999999999@s.whatsapp.net', True, True, True,"
        " 2e9, None)\n"
        "for patch in patches(command, 1_795_000_000.0):\n"
        "    try:\n"
        "        client.send_app_state(patch)\n"
        "    except Exception as error:\n"
        "        print(type(error).__name__, error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines() == ["SendAppStateError client is nil"] * 3
