"""Live events end to end: real workers, two master replicas, the real JavaScript
Socket.IO client as the front-end, and a master restart the client resumes across."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ROOT, free_port
from tests.support.master import start_master
from tests.support.processes import ProgramProcess
from tests.support.worker import CREDENTIAL, start_worker

TOKEN = "events-token-7f3a"
KEY = "events-key-91bc"
BODY = "a private message body 5e1c"
JS = ROOT / "tests" / "js"


class Listener:
    """`node listen.mjs`: one Socket.IO front-end, its printed lines collected."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.lines: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            ["node", str(JS / "listen.mjs"), url, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=JS,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"type": "text", "text": raw.decode(errors="replace")})

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [
            line["payload"]
            for line in self.lines
            if line["type"] == "event" and (name is None or line["event"] == name)
        ]

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"{what}: not within {timeout} s; lines: {self.lines[-20:]}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)


def post(url: str, key: str = KEY, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"x-api-key": key, "Content-Type": "application/json"}
    request = urllib.request.Request(url, method="POST", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def worker_events(port: int) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events", headers=CREDENTIAL)
    with urllib.request.urlopen(request, timeout=5) as response:
        return list(json.loads(response.read())["events"])


@pytest.fixture
def programs() -> Iterator[list[ProgramProcess]]:
    started: list[ProgramProcess] = []
    yield started
    for program in started:
        program.stop()


def test_events_reach_clients_on_both_replicas_and_survive_a_master_restart(
    tmp_path: Path, programs: list[ProgramProcess]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "accounts.json").write_text(
        json.dumps([{"slot": "A60", "ws": "sales"}, {"slot": "A61", "ws": "sales"}])
    )
    env = {"PATH": os.environ["PATH"]}
    w1, w2, m1, m2 = (free_port() for _ in range(4))
    shards = json.dumps(
        [
            {"id": "w1", "port": w1, "from": "A1", "to": "A50"},
            {"id": "w2", "port": w2, "from": "A51", "to": "A100"},
        ]
    )
    # Workers push to the first replica only; the second learns everything by polling.
    push = {"MASTER_INTERNAL_URL": f"http://127.0.0.1:{m1}", "MASTER_TOKEN": TOKEN}
    for name, port, first, last in (("w1", w1, "A1", "A50"), ("w2", w2, "A51", "A100")):
        programs.append(
            start_worker(
                tmp_path / f"{name}.log",
                port,
                tmp_path / name,
                config,
                base_env=env,
                SLOT_FROM=first,
                SLOT_TO=last,
                SHARD_NAME=name,
                **push,
            )
        )
    master_env = {"SHARDS_JSON": shards, "MASTER_TOKEN": TOKEN, "API_KEYS": KEY}
    replica_one = start_master(tmp_path / "m1.log", m1, config, base_env=env, **master_env)
    replica_two = start_master(tmp_path / "m2.log", m2, config, base_env=env, **master_env)
    programs += [replica_one, replica_two]

    everything = Listener(f"http://127.0.0.1:{m1}", {"apiKey": KEY, "all": True})
    sales = Listener(f"http://127.0.0.1:{m2}", {"apiKey": KEY, "ws": "sales"})
    stranger = Listener(f"http://127.0.0.1:{m2}", {"apiKey": "wrong", "all": True})
    try:

        def joined(listener: Listener) -> Callable[[], bool]:
            return lambda: any(x["type"] == "joined" for x in listener.lines)

        for listener in (everything, sales):
            listener.wait_for(joined(listener), "join")
        stranger.wait_for(
            lambda: any(x["type"] == "connect_error" for x in stranger.lines), "refusal"
        )
        assert "invalid API key" in str(stranger.lines)

        for slot in ("A3", "A4", "A60"):
            post(f"http://127.0.0.1:{m1}/api/accounts/{slot}/connect")
            post(f"http://127.0.0.1:{m1}/api/accounts/{slot}/scan")
        # A message between two simulated accounts arrives live, body included (never logged).
        post(
            f"http://127.0.0.1:{m2}/api/accounts/A3/send",
            body={"to": "555101000000004", "text": BODY},
        )
        everything.wait_for(
            lambda: any(e["body"] == BODY for e in everything.events("wa:message")), "message"
        )
        [message] = everything.events("wa:message")
        assert (message["slot"], message["from"], message["chat_type"]) == (
            "A4",
            "555101000000003",
            "direct",
        )
        everything.wait_for(
            lambda: any(e["state"] == "sent" for e in everything.events("wa:message_status")),
            "sent state",
        )

        def connected(listener: Listener, slot: str) -> Callable[[], bool]:
            return lambda: (
                {"slot": slot, "status": "CONNECTED"}
                in [
                    {"slot": e["slot"], "status": e["status"]} for e in listener.events("wa:status")
                ]
            )

        everything.wait_for(connected(everything, "A3"), "A3 CONNECTED on replica one")
        everything.wait_for(connected(everything, "A60"), "A60 CONNECTED on replica one")
        sales.wait_for(connected(sales, "A60"), "A60 CONNECTED on replica two")
        assert any(
            e["slot"] == "A60" and e["qr"].startswith("data:image/png")
            for e in sales.events("wa:qr")
        )
        # The sales room sees its workspace's slots only.
        assert {e["slot"] for e in sales.events()} == {"A60"}

        # Replica two dies; events happen meanwhile; it comes back on the same port.
        replica_two.kill()
        sales.wait_for(lambda: any(x["type"] == "disconnect" for x in sales.lines), "disconnect")
        post(f"http://127.0.0.1:{m1}/api/accounts/A61/connect")
        post(f"http://127.0.0.1:{m1}/api/accounts/A61/scan")
        everything.wait_for(connected(everything, "A61"), "A61 CONNECTED on replica one")
        programs.append(start_master(tmp_path / "m2b.log", m2, config, base_env=env, **master_env))
        sales.wait_for(connected(sales, "A61"), "A61 CONNECTED replayed after the restart")

        # Every event of the sales slots, exactly once, in the worker's order.
        expected = [
            e["id"] for e in worker_events(w2) if e["payload"].get("slot") in ("A60", "A61")
        ]
        got = [e["eventId"] for e in sales.events() if e["shard"] == "w2"]
        assert got == expected
        # Pushed and polled copies on replica one were delivered once, too.
        seen = [(e["shard"], e["eventId"]) for e in everything.events()]
        assert len(seen) == len(set(seen))
        assert sorted(i for s, i in seen if s == "w1") == sorted(e["id"] for e in worker_events(w1))
    finally:
        for listener in (everything, sales, stranger):
            listener.close()
    for program in programs:
        log = program.output()
        for secret in (TOKEN, KEY, BODY):
            assert secret not in log, f"a secret or a body reached {program.log.name}"
