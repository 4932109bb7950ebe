"""The simulator covers the whole fleet: a message between slots of two shards arrives.

Two real `wasp worker` processes (A1..A50 and A51..A100) share one simulated
WhatsApp server (SIMULATOR_SERVER_DIR); A1 writes to A51 and A51 answers. A message
for an account that is not connected waits on the server and arrives once it is.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from wasp_worker.backends.simulator import phone_of

from tests.support.processes import ProgramProcess, free_port
from tests.support.worker import CREDENTIAL, start_worker
from wasp.slots import Slot


def call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body or {}).encode() if method == "POST" else None
    headers = {"Content-Type": "application/json", **CREDENTIAL}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def start(tmp_path: Path, name: str, first: str, last: str) -> tuple[ProgramProcess, str]:
    port = free_port()
    worker = start_worker(
        tmp_path / f"{name}.log",
        port,
        tmp_path / name,
        tmp_path / "config",
        base_env={"PATH": os.environ["PATH"]},
        SLOT_FROM=first,
        SLOT_TO=last,
        SIMULATOR_SERVER_DIR=str(tmp_path / "server"),
    )
    return worker, f"http://127.0.0.1:{port}"


def log_in(base: str, slot: str) -> None:
    call("POST", f"{base}/api/accounts/{slot}/connect")
    assert call("POST", f"{base}/api/accounts/{slot}/scan")["status"] == "CONNECTED"


def messages_to(base: str, slot: str) -> list[dict[str, Any]]:
    events = call("GET", f"{base}/events?limit=5000")["events"]
    return [
        e["payload"] for e in events if e["event"] == "wa:message" and e["payload"]["slot"] == slot
    ]


def wait_for(check: Any, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


def test_messages_cross_shards_both_ways_and_wait_for_an_offline_account(
    tmp_path: Path,
) -> None:
    (tmp_path / "config").mkdir()
    w1, one = start(tmp_path, "w1", "A1", "A50")
    w2, two = start(tmp_path, "w2", "A51", "A100")
    try:
        log_in(one, "A1")
        log_in(two, "A51")
        to_a51 = phone_of(Slot.parse("A51"))
        call("POST", f"{one}/api/accounts/A1/send", {"to": to_a51, "text": "hello w2"})
        wait_for(lambda: messages_to(two, "A51"), "A1 -> A51 across shards")
        arrived = messages_to(two, "A51")[0]
        assert (arrived["from"], arrived["body"]) == (phone_of(Slot.parse("A1")), "hello w2")
        chats = call("GET", f"{two}/api/accounts/A51/chats")["chats"]
        assert chats[0]["unread"] == 1
        to_a1 = phone_of(Slot.parse("A1"))
        call("POST", f"{two}/api/accounts/A51/send", {"to": to_a1, "text": "hello w1"})
        wait_for(lambda: messages_to(one, "A1"), "A51 -> A1 back")
        # A60 is not connected yet: the message waits on the server, then arrives once.
        to_a60 = phone_of(Slot.parse("A60"))
        call("POST", f"{one}/api/accounts/A1/send", {"to": to_a60, "text": "later"})
        time.sleep(1)
        assert messages_to(two, "A60") == []
        log_in(two, "A60")
        wait_for(lambda: messages_to(two, "A60"), "A60 gets what waited")
        time.sleep(1)
        assert [m["body"] for m in messages_to(two, "A60")] == ["later"]
    finally:
        w1.stop()
        w2.stop()
