"""A slot's session through its proxy: real neonize cells offline, a real tinyproxy on
127.0.0.1, the proxy read from a real config directory and credentials file. There is no
internet here, so every connect fails beyond the proxy; the proxy's own log shows who
went through it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wasp_worker.backends.base import StatusEvent
from wasp_worker.backends.neonize import BACKOFF_S, NeonizeBackend
from wasp_worker.backends.proxy_gate import BACKOFF_S as PROXY_BACKOFF_S
from wasp_worker.backends.proxy_gate import ProxyGate
from wasp_worker.backends.simulator import SimulatorBackend
from wasp_worker.proxies import ProxyLookup

from tests.support.tinyproxy import Tinyproxy, free_port
from wasp.proxies import Credentials, ProxyTarget
from wasp.slots import Slot

A1, A2 = Slot.parse("A1"), Slot.parse("A2")
USER, PASSWORD = "alice", "s3cretPW"
WHATSAPP = "CONNECT web.whatsapp.com:443 HTTP/1.1"


class Recorder:
    def __init__(self) -> None:
        self.events: list[StatusEvent] = []
        self.delays: list[float] = []

    async def on_status(self, event: StatusEvent) -> None:
        self.events.append(event)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)  # the clock is ours: a retry follows at once
        await asyncio.sleep(0.05)

    def failures(self, slot: Slot) -> list[StatusEvent]:
        return [e for e in self.events if e.slot == slot and e.status == "DISCONNECTED"]

    async def wait_for(self, predicate: object, within_s: float = 30) -> None:
        assert callable(predicate)
        for _ in range(int(within_s / 0.05)):
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"not reached; events: {self.events[-5:]}, delays: {self.delays}")


def configure(config_dir: Path, proxies: dict[str, str], credentials: dict[str, object]) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    accounts = [{"slot": slot, "enabled": True, "proxy": url} for slot, url in proxies.items()]
    (config_dir / "accounts.json").write_text(json.dumps(accounts))
    (config_dir / "proxy-credentials.json").write_text(json.dumps(credentials))


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    running = Tinyproxy(tmp_path / "proxy", credentials=(USER, PASSWORD)).start()
    try:
        yield running
    finally:
        running.stop()


def lookup(config_dir: Path) -> ProxyLookup:
    return ProxyLookup(config_dir, config_dir / "proxy-credentials.json")


async def test_only_the_slot_with_a_proxy_connects_through_it(
    tmp_path: Path, proxy: Tinyproxy, capfd: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    configure(config, {"A1": proxy.url}, {"A1": {"username": USER, "password": PASSWORD}})
    seen = Recorder()
    backend = NeonizeBackend(tmp_path / "data", sleep=seen.sleep, proxies=lookup(config))
    try:
        await backend.start(A2, seen.on_status)  # no proxy: straight at WhatsApp
        await seen.wait_for(lambda: seen.failures(A2))
        assert proxy.requests() == []
        await backend.stop(A2)
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: seen.failures(A1))
        # the proxy accepted the credentials: it went on to WhatsApp (and found no internet)
        assert proxy.requests()[0] == WHATSAPP
        assert "Unauthorized" not in proxy.text()
        first = seen.failures(A1)[0]
        assert first.reason == "connect_failed: NeonizeError"  # beyond the proxy
        assert first.detail == {"proxy": f"127.0.0.1:{proxy.port}"}
    finally:
        await backend.close()
    assert PASSWORD not in repr(seen.events)
    out, err = capfd.readouterr()  # the cells' own output (whatsmeow's log) included
    assert PASSWORD not in out + err


async def test_a_stopped_proxy_says_proxy_unreachable_and_backs_off(
    tmp_path: Path, proxy: Tinyproxy
) -> None:
    config = tmp_path / "config"
    configure(config, {"A1": proxy.url}, {"A1": {"username": USER, "password": PASSWORD}})
    proxy.stop()
    seen = Recorder()
    backend = NeonizeBackend(tmp_path / "data", sleep=seen.sleep, proxies=lookup(config))
    try:
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 7)
        failed = seen.failures(A1)
        assert {e.reason for e in failed} == {"proxy_unreachable"}
        assert failed[0].detail == {
            "proxy": f"127.0.0.1:{proxy.port}",
            "error": "ConnectionRefusedError",
        }
        assert seen.delays[:7] == [*BACKOFF_S, 60]  # bounded, not a hot loop
    finally:
        await backend.close()
    assert PASSWORD not in repr(seen.events)


async def test_credentials_the_proxy_refuses_say_proxy_auth_refused(
    tmp_path: Path, proxy: Tinyproxy
) -> None:
    config = tmp_path / "config"
    configure(config, {"A1": proxy.url}, {"A1": {"username": USER, "password": "wrong"}})
    seen = Recorder()
    backend = NeonizeBackend(tmp_path / "data", sleep=seen.sleep, proxies=lookup(config))
    try:
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: seen.failures(A1))
        failed = seen.failures(A1)[0]
        assert failed.reason == "proxy_auth_refused"
        assert failed.detail == {"proxy": f"127.0.0.1:{proxy.port}"}
        assert WHATSAPP in proxy.requests()  # it asked, and was refused
    finally:
        await backend.close()


async def test_an_invalid_proxy_is_held_never_connected_directly(tmp_path: Path) -> None:
    config = tmp_path / "config"
    configure(config, {"A1": "ftp://127.0.0.1:21"}, {})
    seen = Recorder()
    backend = NeonizeBackend(tmp_path / "data", sleep=seen.sleep, proxies=lookup(config))
    try:
        await backend.start(A1, seen.on_status)
        assert seen.events[-1].reason == "proxy_invalid"
        assert backend.cells == {}  # no cell, no connect
        assert seen.delays == []
    finally:
        await backend.close()


async def test_the_worker_reports_the_proxy_and_never_its_credentials(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from wasp_worker.app import build_app
    from wasp_worker.events import EventLog

    from tests.support.worker import CREDENTIAL
    from tests.worker.test_worker_http import config

    dead = free_port()  # nobody listens there
    configure(
        tmp_path / "config",
        {"A1": f"http://127.0.0.1:{dead}"},
        {"A1": {"username": USER, "password": PASSWORD}},
    )
    stream = io.StringIO()
    log = EventLog(stream=stream)
    app = build_app(config(tmp_path, backend="neonize"), log)
    async with TestClient(TestServer(app), headers=CREDENTIAL) as worker:
        await worker.post("/api/accounts/A1/connect")
        status: dict[str, Any] = {}
        for _ in range(300):
            status = await (await worker.get("/api/accounts/A1/status")).json()
            if status.get("reason") == "proxy_unreachable":
                break
            await asyncio.sleep(0.05)
        assert status["reason"] == "proxy_unreachable"
        assert status["detail"] == {"proxy": f"127.0.0.1:{dead}", "error": "ConnectionRefusedError"}
        answers = json.dumps(status)
    logged = stream.getvalue()
    assert "proxy_unreachable" in logged
    for secret in (PASSWORD, USER):
        assert secret not in logged
        assert secret not in answers


def test_the_address_quotes_the_credentials_and_the_repr_hides_them() -> None:
    secret = "pa55:w/rd@x"  # characters a URL must quote
    target = ProxyTarget("socks5://[::1]:1080", Credentials(username=USER, password=secret))
    assert target.address() == "socks5://alice:pa55%3Aw%2Frd%40x@[::1]:1080"
    assert (target.host, target.port, target.endpoint) == ("::1", 1080, "[::1]:1080")
    assert secret not in repr(target)
    assert ProxyTarget("http://h:1").address() == "http://h:1"


async def test_the_simulator_waits_for_its_proxy_to_answer_with_a_bounded_backoff(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    port = free_port()
    configure(config, {"A1": f"http://127.0.0.1:{port}"}, {})
    seen = Recorder()
    gate = ProxyGate(lookup(config), sleep=seen.sleep)
    backend = SimulatorBackend(tmp_path / "data", proxy_gate=gate)
    proxy = Tinyproxy(tmp_path / "proxy", port=port)
    try:
        await backend.start(A2, seen.on_status)  # no proxy: starts at once
        assert seen.events[-1].slot == A2
        assert seen.events[-1].status == "CONNECTING"
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 7)
        failed = seen.failures(A1)
        assert {e.reason for e in failed} == {"proxy_unreachable"}
        assert failed[0].detail == {"proxy": f"127.0.0.1:{port}", "error": "ConnectionRefusedError"}
        assert seen.delays[:7] == [*PROXY_BACKOFF_S, 60]
        assert A1 not in backend.sessions
        proxy.start()
        await seen.wait_for(lambda: seen.events[-1].slot == A1 and seen.events[-1].qr)
        assert A1 in backend.sessions  # the proxy answered: the session started
        assert "Connect (" in proxy.text()
        count = len(seen.delays)
        await asyncio.sleep(0.3)
        assert len(seen.delays) == count  # no retries once started
    finally:
        proxy.stop()
        await backend.close()


async def test_stopping_a_slot_that_waits_for_its_proxy_ends_the_wait(tmp_path: Path) -> None:
    config = tmp_path / "config"
    configure(config, {"A1": f"http://127.0.0.1:{free_port()}"}, {})
    seen = Recorder()
    backend = SimulatorBackend(
        tmp_path / "data", proxy_gate=ProxyGate(lookup(config), sleep=seen.sleep)
    )
    try:
        await backend.start(A1, seen.on_status)
        assert seen.events[-1].reason == "proxy_unreachable"
        await backend.stop(A1)
        assert seen.events[-1].reason == "stopped"
        count = len(seen.delays)
        await asyncio.sleep(0.3)
        assert len(seen.delays) == count
        assert A1 not in backend.sessions
    finally:
        await backend.close()


async def test_a_simulator_worker_says_why_and_starts_once_the_proxy_answers(
    tmp_path: Path,
) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from wasp_worker.app import build_app
    from wasp_worker.events import EventLog

    from tests.support.worker import CREDENTIAL
    from tests.worker.test_worker_http import config

    port = free_port()
    configure(tmp_path / "config", {"A1": f"http://127.0.0.1:{port}"}, {})
    proxy = Tinyproxy(tmp_path / "proxy", port=port)
    app = build_app(config(tmp_path), EventLog(stream=io.StringIO()))
    try:
        async with TestClient(TestServer(app), headers=CREDENTIAL) as worker:
            answer = await (await worker.post("/api/accounts/A1/connect")).json()
            assert answer["reason"] == "proxy_unreachable"
            assert answer["detail"] == {
                "proxy": f"127.0.0.1:{port}",
                "error": "ConnectionRefusedError",
            }
            proxy.start()  # the next try, after the first backoff (2 s), finds it
            status: dict[str, Any] = {}
            for _ in range(200):
                status = await (await worker.get("/api/accounts/A1/status")).json()
                if status["status"] == "CONNECTING":
                    break
                await asyncio.sleep(0.05)
            assert status["status"] == "CONNECTING"
            assert status["qr"]
    finally:
        proxy.stop()
