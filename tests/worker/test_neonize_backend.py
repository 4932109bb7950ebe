"""The neonize backend offline: real neonize in real cells; WhatsApp is unreachable from here,
so every connect fails at once, which drives the backoff and the crash recovery."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from wasp_worker.backends.base import StatusEvent
from wasp_worker.backends.neonize import BACKOFF_S, NeonizeBackend, _Session

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
    finally:
        await backend.close()


async def test_connected_resets_the_backoff(tmp_path: Path) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    backend.sessions[A1] = _Session(seen.on_status, failures=4)
    await backend.handle(("connected", "A1"))
    assert backend.sessions[A1].failures == 0
    assert seen.events[-1].status == "CONNECTED"
    backend._schedule_retry(A1, backend.sessions[A1])
    await asyncio.sleep(0)
    assert seen.delays[-1] == 2
    await backend.close()


async def test_logged_out_and_stream_error_515_wipe_the_auth(tmp_path: Path) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    for slot, event in ((A1, ("logged_out", "A1", "401")), (A2, ("stream_error", "A2", "515"))):
        auth = backend.auth_dir(slot)
        auth.mkdir(parents=True)
        (auth / "session.sqlite3").write_bytes(b"store")
        backend.sessions[slot] = _Session(seen.on_status)
        await backend.handle(event)
        assert not auth.exists()
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
