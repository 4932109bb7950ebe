"""The simulator covers the whole fleet: a message between slots of two shards arrives,
and its receipts come back.

Two real `wasp worker` processes (A1..A50 and A51..A100) share one simulated
WhatsApp server (SIMULATOR_SERVER_DIR); A1 writes to A51 and A51 answers. A message
for an account that is not connected waits on the server and arrives once it is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from wasp_worker.backends.simulator import phone_of

from tests.support.processes import ProgramProcess, free_port
from tests.support.waiting import eventually
from tests.support.worker import call_worker, start_worker
from wasp.slots import Slot


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
    assert call_worker("POST", f"{base}/api/accounts/{slot}/connect")[0] == 200
    assert call_worker("POST", f"{base}/api/accounts/{slot}/scan")[1]["status"] == "CONNECTED"


def messages_to(base: str, slot: str) -> list[dict[str, Any]]:
    events = call_worker("GET", f"{base}/events?limit=5000")[1]["events"]
    return [
        e["payload"] for e in events if e["event"] == "wa:message" and e["payload"]["slot"] == slot
    ]


def receipt_of(base: str, slot: str, chat: str) -> str:
    """The receipt status of the slot's last message in a chat."""
    shown = call_worker("POST", f"{base}/api/accounts/{slot}/openChat", {"chat_id": chat})[1]
    return str(shown["messages"][-1]["status"])


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
        assert (
            call_worker("POST", f"{one}/api/accounts/A1/send", {"to": to_a51, "text": "hello w2"})[
                0
            ]
            == 202
        )
        eventually(lambda: messages_to(two, "A51"), "A1 -> A51 across shards")
        arrived = messages_to(two, "A51")[0]
        assert (arrived["from"], arrived["body"]) == (phone_of(Slot.parse("A1")), "hello w2")
        chats = call_worker("GET", f"{two}/api/accounts/A51/chats")[1]["chats"]
        assert chats[0]["unread"] == 1
        # Receipts cross shards too: delivered once it arrived, read once A51 opens the chat.
        eventually(lambda: receipt_of(one, "A1", to_a51) == "delivered", "delivered on w1")
        to_a1 = phone_of(Slot.parse("A1"))
        opened = call_worker("POST", f"{two}/api/accounts/A51/openChat", {"chat_id": to_a1})[1]
        assert opened["read_receipts"] == "sent"
        eventually(lambda: receipt_of(one, "A1", to_a51) == "read", "read, seen on w1")
        assert (
            call_worker("POST", f"{two}/api/accounts/A51/send", {"to": to_a1, "text": "hello w1"})[
                0
            ]
            == 202
        )
        eventually(lambda: messages_to(one, "A1"), "A51 -> A1 back")
        # A60 is not connected yet: the message waits on the server, then arrives once.
        to_a60 = phone_of(Slot.parse("A60"))
        assert (
            call_worker("POST", f"{one}/api/accounts/A1/send", {"to": to_a60, "text": "later"})[0]
            == 202
        )
        time.sleep(1)
        assert messages_to(two, "A60") == []
        log_in(two, "A60")
        eventually(lambda: messages_to(two, "A60"), "A60 gets what waited")
        time.sleep(1)
        assert [m["body"] for m in messages_to(two, "A60")] == ["later"]
    finally:
        w1.stop()
        w2.stop()
