"""What a message does reaches the webhooks, from the outbox written with each change:
message.received at the recipient, message.status queued -> sent -> delivered -> read
at the sender, signed, each slot's events in order; and none is lost when the worker
is killed (SIGKILL) while the receiver is down."""

from __future__ import annotations

import concurrent.futures
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.backends.simulator import phone_of
from wasp_worker.events import EventLog

from tests.support.processes import free_port
from tests.support.waiting import eventually, eventually_async
from tests.support.webhook_receiver import ThreadedReceiver
from tests.support.worker import CREDENTIAL, call_worker, start_worker
from tests.worker.test_worker_http import config as worker_config
from wasp.slots import Slot

EVENTS = ["message.received", "message.status", "session.status", "session.qr"]
A1, A2 = phone_of(Slot.parse("A1")), phone_of(Slot.parse("A2"))


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    found = ThreadedReceiver(free_port())
    found.start()
    yield found
    found.stop()


def outbox(work_dir: Path) -> list[tuple[int, str, str, str]]:
    """(seq, id, slot, type) of every event the subscription receives, in outbox order."""
    with sqlite3.connect(work_dir / "queue.sqlite3") as db:
        return db.execute(
            "SELECT o.seq, o.id, o.slot, o.type FROM outbox o, outbox_consumers c "
            "WHERE o.seq > c.start_seq ORDER BY o.seq"
        ).fetchall()


def registered(work_dir: Path) -> bool:
    path = work_dir / "queue.sqlite3"
    if not path.exists():
        return False
    with sqlite3.connect(path) as db:
        return bool(db.execute("SELECT count(*) FROM outbox_consumers").fetchone()[0])


def assert_in_order_per_slot(delivered: list[dict[str, Any]], work_dir: Path) -> None:
    """Each slot's events arrived (first 2xx of each id) in the order the outbox has them."""
    stored = outbox(work_dir)
    for slot in {e["slot"] for e in delivered}:
        arrived = [e["id"] for e in delivered if e["slot"] == slot]
        expected = [i for _, i, s, _ in stored if s == slot and i in set(arrived)]
        assert arrived == expected, f"{slot} out of order"


def states_of(delivered: list[dict[str, Any]], wa_message_id: str) -> list[str]:
    return [
        e["data"]["state"]
        for e in delivered
        if e["type"] == "message.status" and e["data"]["waMessageId"] == wa_message_id
    ]


async def test_a_message_is_received_at_a2_and_its_states_reach_a1s_subscription(
    tmp_path: Path, receiver: ThreadedReceiver
) -> None:
    config = worker_config(tmp_path)
    receiver.subscribe(config.config_dir, "crm", EVENTS)
    app = build_app(config, EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app), headers=CREDENTIAL) as worker:

        async def ready() -> bool:
            return registered(config.work_dir)

        await eventually_async(ready, "the subscription registered", 10)
        for slot in ("A1", "A2"):
            await worker.post(f"/api/accounts/{slot}/connect")
            await worker.post(f"/api/accounts/{slot}/scan")
        sent = await worker.post("/api/accounts/A1/send", json={"to": A2, "text": "hello"})
        message = (await sent.json())["message"]

        async def delivered() -> bool:
            return states_of(receiver.delivered(), message["waMessageId"])[-1:] == ["delivered"]

        await eventually_async(delivered, "delivered, as A1's subscription hears it", 15)
        opened = await worker.post("/api/accounts/A2/openChat", json={"chat_id": A1})
        assert (await opened.json())["read_receipts"] == "sent"

        async def read() -> bool:
            return states_of(receiver.delivered(), message["waMessageId"])[-1:] == ["read"]

        await eventually_async(read, "read, as A1's subscription hears it", 15)

    events = receiver.delivered()
    assert states_of(events, message["waMessageId"]) == ["queued", "sent", "delivered", "read"]
    [status] = [
        e for e in events if e["type"] == "message.status" and e["data"]["state"] == "queued"
    ]
    assert status["slot"] == "A1"
    assert status["data"] == {
        "slot": "A1",
        "id": message["id"],
        "waMessageId": message["waMessageId"],
        "to": f"{A2}@s.whatsapp.net",
        "state": "queued",
        "reason": None,
    }
    [received] = [e for e in events if e["type"] == "message.received"]
    assert received["slot"] == "A2"
    data = received["data"]
    assert (data["from"], data["body"], data["wa_message_id"]) == (
        A1,
        "hello",
        message["waMessageId"],
    )
    assert data["from_me"] is False
    for field in ("chat_id", "chat_type", "timestamp", "media_url", "sender_lid", "push_name"):
        assert field in data  # every field of the inbound event
    assert {e["type"] for e in events} == set(EVENTS)
    assert receiver.bad_signatures == 0
    assert_in_order_per_slot(events, config.work_dir)


MESSAGES = 300


def post(url: str, body: dict[str, Any]) -> int:
    try:
        return call_worker("POST", url, body)[0]
    except OSError:
        return 0  # the worker is down


def count(work_dir: Path, sql: str) -> int:
    with sqlite3.connect(work_dir / "queue.sqlite3") as db:
        return int(db.execute(sql).fetchone()[0])


def test_kill_9_while_the_receiver_is_down_loses_no_event(
    tmp_path: Path, receiver: ThreadedReceiver
) -> None:
    config, work_dir = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    (config / "accounts.json").write_text(
        json.dumps([{"slot": "A1", "enabled": True}, {"slot": "A2", "enabled": True}])
    )
    receiver.subscribe(config, "crm", EVENTS)
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/accounts"
    worker = start_worker(tmp_path / "worker.log", port, work_dir, config)
    try:
        worker.wait_until(lambda: registered(work_dir), "the subscription registered")
        for slot in ("A1", "A2"):
            assert post(f"{base}/{slot}/connect", {}) == 200
            assert post(f"{base}/{slot}/scan", {}) == 200
        receiver.stop()  # down: connections refused from here

        def send(i: int) -> int:
            return post(f"{base}/A1/send", {"to": A2, "text": f"m{i}", "idempotency_key": f"k{i}"})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert set(pool.map(send, range(MESSAGES))) == {202}
        worker.kill()
        queued = count(work_dir, "SELECT count(*) FROM outbound WHERE state='queued'")
        print(f"at SIGKILL: {queued} of {MESSAGES} still queued")
        assert queued > 0, "the kill must land while the queue drains"
        worker = start_worker(tmp_path / "worker.log", port, work_dir, config)
        worker.wait_until(
            lambda: (
                count(work_dir, "SELECT count(*) FROM outbound WHERE state='delivered'") == MESSAGES
            ),
            "every message delivered to A2's device",
            timeout=120,
        )
        receiver.start()  # up again
        expected = {i for _, i, _, _ in outbox(work_dir)}
        eventually(
            lambda: expected <= {e["id"] for e in receiver.delivered()},
            "every event delivered",
            90,
        )
    finally:
        worker.stop()

    events = receiver.delivered()
    # Every event recorded; and nothing else (the stop's own status events may follow).
    assert expected <= {e["id"] for e in events} <= {i for _, i, _, _ in outbox(work_dir)}
    assert receiver.bad_signatures == 0
    assert_in_order_per_slot(events, work_dir)
    received = [e["data"]["body"] for e in events if e["type"] == "message.received"]
    assert sorted(received) == sorted(f"m{i}" for i in range(MESSAGES))
    with sqlite3.connect(work_dir / "queue.sqlite3") as db:
        ids = [r[0] for r in db.execute("SELECT wa_message_id FROM outbound")]
    for wa_message_id in ids:
        assert states_of(events, wa_message_id) == ["queued", "sent", "delivered"]
    repeats = len(receiver.arrivals) - len(events)
    print(f"{len(events)} events, {repeats} repeated deliveries (dropped by webhook-id)")
