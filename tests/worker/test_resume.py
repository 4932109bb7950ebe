"""Every session that was running comes back by itself: the wanted set on the volume.

A real `wasp worker` (simulator) with 30 logged-in slots, 5 of them bound in roles, is
killed with SIGKILL and started again: all 30 are CONNECTED from their stored auth, no
QR code is shown, and the status events go out. Logout and destroy end the wish.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.backends.base import StatusEvent
from wasp_worker.backends.simulator import SimulatorBackend
from wasp_worker.events import EventLog
from wasp_worker.state import SESSIONS
from wasp_worker.wanted import WantedSessions

from tests.support.processes import ProgramProcess, free_port
from tests.support.waiting import eventually, eventually_async
from tests.support.worker import CREDENTIAL, call_worker, start_worker
from tests.worker.test_worker_http import config as worker_config
from wasp.slots import Slot

LOGGED_IN = [f"A{n}" for n in range(1, 31)]
BOUND = ["A3", "A9", "A17", "A25", "A30"]


def start(tmp_path: Path, port: int) -> ProgramProcess:
    return start_worker(
        tmp_path / "worker.log",
        port,
        tmp_path / "data",
        tmp_path / "config",
        base_env={"PATH": os.environ["PATH"]},
        MAX_ACTIVE="40",
        MAX_INIT="4",
        WARMUP_LIMIT="10",
    )


def statuses(base: str, slots: list[str]) -> dict[str, str]:
    return {slot: call_worker("GET", f"{base}/{slot}/status")[1]["status"] for slot in slots}


def test_thirty_logged_in_sessions_come_back_after_a_sigkill_without_a_qr(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "roles.json").write_text(json.dumps([{"boundSlot": slot} for slot in BOUND]))
    (config / "accounts.json").write_text(
        json.dumps([{"slot": slot, "enabled": True} for slot in LOGGED_IN])
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/accounts"
    worker = start(tmp_path, port)
    try:
        for slot in LOGGED_IN:
            assert call_worker("POST", f"{base}/{slot}/connect")[0] == 200
            assert call_worker("POST", f"{base}/{slot}/scan")[0] == 200
        assert set(statuses(base, LOGGED_IN).values()) == {"CONNECTED"}
        # Destroyed and logged out: no longer wanted, so they stay down after the crash.
        assert call_worker("POST", f"{base}/A31/connect")[0] == 200
        assert call_worker("POST", f"{base}/A31/scan")[0] == 200
        assert call_worker("POST", f"{base}/A31/destroy")[0] == 200
        assert call_worker("POST", f"{base}/A32/connect")[0] == 200
        assert call_worker("POST", f"{base}/A32/scan")[0] == 200
        assert call_worker("POST", f"{base}/A32/logout")[0] == 200
    finally:
        worker.kill()

    restarted = start(tmp_path, port)
    try:
        eventually(
            lambda: set(statuses(base, LOGGED_IN).values()) == {"CONNECTED"},
            "all 30 sessions CONNECTED again",
        )
        assert statuses(base, ["A31", "A32"]) == {"A31": "DISCONNECTED", "A32": "DISCONNECTED"}
        feed = call_worker("GET", f"http://127.0.0.1:{port}/events?limit=5000")[1]["events"]
        qr_shown = [e for e in feed if e["event"] == "wa:qr"]
        assert qr_shown == []
        connected = {
            e["payload"]["slot"]
            for e in feed
            if e["event"] == "wa:status" and e["payload"]["status"] == "CONNECTED"
        }
        assert connected == set(LOGGED_IN)
        logs = [json.loads(line) for line in restarted.output().splitlines() if line.strip()]
        resumed = [line for line in logs if line["event"] == "sessions_resumed"]
        assert sorted(resumed[-1]["slots"]) == sorted(LOGGED_IN)
        # Warm-up came after, with nothing left to start: the bound slots were wanted too.
        warmups = [line for line in logs if line["event"] == "warmup_start"]
        assert warmups[-1]["count"] == 0
    finally:
        restarted.stop()


def test_capacity_bounds_what_comes_back(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wanted.json").write_text(json.dumps(LOGGED_IN[:6]))
    (tmp_path / "config").mkdir()
    port = free_port()
    worker = start_worker(
        tmp_path / "worker.log",
        port,
        tmp_path / "data",
        tmp_path / "config",
        base_env={"PATH": os.environ["PATH"]},
        MAX_ACTIVE="4",
    )
    try:
        base = f"http://127.0.0.1:{port}/api/accounts"
        eventually(
            lambda: list(statuses(base, LOGGED_IN[:6]).values()).count("DISCONNECTED") == 2,
            "four of six back",
        )
        logs = [json.loads(line) for line in worker.output().splitlines() if line.strip()]
        full = [line for line in logs if line["event"] == "resume_capacity_full"]
        assert full[0]["skipped"] == LOGGED_IN[4:6]
    finally:
        worker.stop()


async def test_the_wanted_set_is_replaced_whole_and_survives_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "wanted.json"
    wanted = WantedSessions(path)
    assert wanted.load() == []
    for text in ("A10", "A2", "A2"):
        await wanted.add(Slot.parse(text))
    await wanted.discard(Slot.parse("A7"))  # not there: nothing changes
    assert json.loads(path.read_text()) == ["A2", "A10"]  # slot order, no duplicates
    assert not path.with_suffix(".tmp").exists()
    path.write_text(json.dumps(["A2", "../A1", "a3"]))
    reloaded = WantedSessions(path)
    assert reloaded.load() == ["../A1", "a3"]  # refused, named; the rest is kept
    assert [str(slot) for slot in reloaded] == ["A2"]


async def test_an_account_unlinked_from_the_phone_is_no_longer_wanted(tmp_path: Path) -> None:
    """The backend says `logged_out` (WhatsApp unlinked the device): resuming it could only
    show a QR, so it leaves the wanted set; a new login makes it wanted again."""
    config = worker_config(tmp_path, slot_from="A1", slot_to="A50")
    async with TestClient(
        TestServer(build_app(config, EventLog(stream=io.StringIO()))), headers=CREDENTIAL
    ) as client:
        for step in ("connect", "scan"):
            assert (await client.post(f"/api/accounts/A1/{step}")).status == 200
        wanted = config.work_dir / "wanted.json"
        assert json.loads(wanted.read_text()) == ["A1"]
        assert client.app is not None
        backend = client.app[SESSIONS].backend
        assert isinstance(backend, SimulatorBackend)
        report = backend.sessions[Slot.parse("A1")].on_status  # the backend's own callback
        a1 = Slot.parse("A1")
        await report(StatusEvent(a1, "DISCONNECTED", reason="logged_out", logged_out=True))
        assert json.loads(wanted.read_text()) == []
        await report(StatusEvent(a1, "DISCONNECTED", reason="disconnected"))
        await report(StatusEvent(a1, "CONNECTED"))
        assert json.loads(wanted.read_text()) == ["A1"]


class LapsingLease:
    """The shard's lease as the loop sees it: held, but for one lapse that `lapse()` makes
    (the renew deadline passing on a slow apiserver), which the next renew ends: failing
    first if `seen`, else at once (the loop never sees it not held). A lapse at an exact
    moment of a warm-up is what a real lease cannot be made to do on demand."""

    def __init__(self, seen: bool) -> None:
        self.held = False
        self.reason = "not acquired yet"
        self.lapses = 0
        self._lapsed = False
        self._seen = seen

    def lapse(self) -> None:
        self.held, self.reason, self._lapsed = False, "renew deadline passed", True
        self.lapses += 1

    def describe(self) -> str:
        return "scripted lease"

    def remaining_s(self) -> float:
        return 60.0 if self.held else 0.0

    async def try_acquire(self) -> bool:
        if self._lapsed and self._seen:  # this renew fails; the one after takes it back
            self._lapsed = False
            return False
        self.held, self.reason = True, "held"
        return True

    async def release(self) -> None:
        self.held = False


@pytest.mark.parametrize("seen", [True, False], ids=["lapse-seen", "lapse-unseen"])
async def test_a_warm_up_cut_by_a_lease_lapse_opens_the_rest_once_the_lease_is_back(
    tmp_path: Path, seen: bool
) -> None:
    """The lease lapses while the warm-up is opening the bound slots (here: as it asks for
    the second of three), whether or not a renew fails before it is held again. Every
    bound slot opens once it is, not only the one the warm-up reached before the lapse."""
    bound = ["A1", "A2", "A3"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "roles.json").write_text(json.dumps([{"boundSlot": s} for s in bound]))
    (tmp_path / "config" / "accounts.json").write_text(
        json.dumps([{"slot": s, "enabled": True} for s in bound])
    )
    log = io.StringIO()
    app = build_app(worker_config(tmp_path, max_active=5), EventLog(stream=log))
    sessions = app[SESSIONS]
    lease = LapsingLease(seen)
    sessions.lease = lease
    connect = sessions.connect

    async def connect_with_a_lapse(slot: Slot) -> Any:
        if str(slot) == "A2" and not lease.lapses:
            lease.lapse()
        return await connect(slot)

    sessions.connect = connect_with_a_lapse  # type: ignore[method-assign]
    async with TestClient(TestServer(app), headers=CREDENTIAL):

        async def all_open() -> bool:
            return all(Slot.parse(s) in sessions.states for s in bound)

        await eventually_async(all_open, "every bound slot open", within_s=10)
    events = [json.loads(line)["event"] for line in log.getvalue().splitlines()]
    assert lease.lapses == 1
    assert events.count("warmup_start") == 2
    assert ("lease_lost" in events) == seen
