"""Nothing is lost on the way to a bad receiver: 1,000 messages arrive at three slots
of two `wasp worker` processes (A1..A50 and A51..A100, one simulated WhatsApp server),
while the receiver answers 500 to a third of the attempts, takes 2 s over some, and is
down for 10 s, and while one worker is killed (SIGKILL) and started again.

The receiver (aiohttp, in a thread) verifies every request with the official Standard
Webhooks library. In the end it holds exactly one `message.received` per message once
repeats are dropped by `webhook-id`, and each slot's events arrived in the order the
slot's outbox holds them, which is the order wasp promises (per slot, per
subscription). From that promise and the sending engine's (a chat's messages leave in
queue order, the simulated server hands them over in the order it took them), the
receiver also sees each sender's messages to a slot in the order they were sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from wasp_worker.backends.simulator import phone_of

from tests.support.processes import ProgramProcess, free_port
from tests.support.waiting import eventually
from tests.support.webhook_receiver import Arrival, subscribe
from tests.support.worker import call_worker, start_worker
from wasp.slots import Slot
from wasp.webhooks import new_secret

MESSAGES = 1000
SENDERS = {"A1": "w1", "A51": "w2"}  # one sender on each shard
RECIPIENTS = ("A2", "A3", "A52")  # A2, A3 on w1 (the one killed), A52 on w2
SHARDS = {"w1": ("A1", "A50"), "w2": ("A51", "A100")}
SLOW_S = 2.0
DOWN_S = 10.0


def script(event_id: str, attempt: int) -> tuple[int, float]:
    """(status, seconds before answering) of an attempt: fixed by the event and the
    attempt, a third of them 500, about one in a hundred slow."""
    digest = hashlib.sha256(f"{event_id}/{attempt}".encode()).digest()
    return (500 if digest[0] % 3 == 0 else 200), (SLOW_S if digest[1] < 3 else 0.0)


class FlakyReceiver:
    """An aiohttp receiver on 127.0.0.1 in a thread of its own: it verifies, records and
    answers as `script` says; `down()` closes the listener and every connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.secret = new_secret()
        self.arrivals: list[Arrival] = []
        self.bad_signatures = 0
        self.slow = 0
        self.holding: set[str] = set()  # slots of slow attempts being answered 2xx now
        # Slots whose next attempt answered 2xx is made slow (one, then it clears): the crash
        # must find one in flight, which the script's one-in-a-hundred may not give in time.
        self.hold_next: set[str] = set()
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def subscribe(self, config_dir: Path, subscription: str, events: list[str]) -> None:
        subscribe(config_dir, subscription, self.url, self.secret, events)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            with self._lock:
                self.bad_signatures += 1
            return web.Response(status=400)
        if event["id"] != request.headers["webhook-id"]:
            with self._lock:
                self.bad_signatures += 1
            return web.Response(status=400)
        with self._lock:
            attempt = self._attempts[event["id"]]
            self._attempts[event["id"]] += 1
        status, delay = script(event["id"], attempt)
        with self._lock:
            if status == 200 and event["slot"] in self.hold_next:
                delay, self.hold_next = SLOW_S, set()
        if delay:
            with self._lock:
                self.slow += 1
                if status == 200:
                    self.holding.add(event["slot"])
            await asyncio.sleep(delay)
            with self._lock:
                self.holding.discard(event["slot"])
        with self._lock:
            self.arrivals.append(Arrival(event, status))
        return web.Response(status=status)

    async def _up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        # Down means down: handlers still waiting are cancelled, never answered.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> None:
        self._thread.start()
        self.up()

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._up(), self._loop).result(10)

    def down(self) -> None:
        asyncio.run_coroutine_threadsafe(self._down(), self._loop).result(10)

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def delivered(self) -> list[dict[str, Any]]:
        """Each event once, by webhook-id, in the order of its first 2xx."""
        with self._lock:
            arrivals = list(self.arrivals)
        seen: dict[str, dict[str, Any]] = {}
        for arrival in arrivals:
            if 200 <= arrival.status < 300 and arrival.event["id"] not in seen:
                seen[arrival.event["id"]] = arrival.event
        return list(seen.values())


@pytest.fixture
def receiver() -> Iterator[FlakyReceiver]:
    found = FlakyReceiver(free_port())
    found.start()
    yield found
    found.close()


@dataclass
class Worker:
    name: str
    port: int
    work_dir: Path
    process: ProgramProcess

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(tmp_path: Path, name: str, port: int | None = None) -> Worker:
    """A shard's worker; started again with the same port and volume after a crash."""
    port = port or free_port()
    first, last = SHARDS[name]
    process = start_worker(
        tmp_path / f"{name}.log",
        port,
        tmp_path / name,
        tmp_path / "config",
        base_env={"PATH": os.environ["PATH"]},
        SLOT_FROM=first,
        SLOT_TO=last,
        SIMULATOR_SERVER_DIR=str(tmp_path / "server"),
        # The retries of a receiver that fails a third of the time, in tenths of a second.
        WEBHOOK_RETRY_BASE_S="0.05",
        WEBHOOK_RETRY_CAP_S="0.5",
    )
    return Worker(name, port, tmp_path / name, process)


def shard_of(slot: str) -> str:
    return "w1" if Slot.parse(slot).number <= 50 else "w2"


def query(work_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(work_dir / "queue.sqlite3") as db:
        return db.execute(sql, args).fetchall()


def received_in_outbox(work_dir: Path) -> list[tuple[str, str]]:
    """(slot, id) of every message.received event in the shard's outbox, by seq."""
    return [
        (slot, event_id)
        for slot, event_id in query(
            work_dir, "SELECT slot, id FROM outbox WHERE type='message.received' ORDER BY seq"
        )
    ]


def undelivered(work_dir: Path) -> int:
    """message.received events the subscription has not been done with yet."""
    [(count,)] = query(
        work_dir,
        "SELECT count(*) FROM outbox o JOIN outbox_consumers c "
        "LEFT JOIN outbox_lanes l ON l.consumer = c.consumer AND l.slot = o.slot "
        "WHERE o.type = 'message.received' AND o.seq > COALESCE(l.seq, c.start_seq)",
    )
    return int(count)


def registered(work_dir: Path) -> bool:
    path = work_dir / "queue.sqlite3"
    return path.exists() and bool(query(work_dir, "SELECT count(*) FROM outbox_consumers")[0][0])


class Senders:
    """One thread per sender, each sending its messages one after the other, round the
    recipients; a request to a worker that is down is tried again with the same
    idempotency key until the worker has it."""

    def __init__(self, workers: dict[str, Worker]) -> None:
        self.workers = workers
        self.posted = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send, args=(slot, index), daemon=True)
            for index, slot in enumerate(SENDERS)
        ]

    def _send(self, slot: str, index: int) -> None:
        for i in range(index, MESSAGES, len(SENDERS)):
            to = RECIPIENTS[i % len(RECIPIENTS)]
            body = {"to": phone_of(Slot.parse(to)), "text": f"m{i:04d}", "idempotency_key": f"k{i}"}
            while True:
                url = f"{self.workers[SENDERS[slot]].base}/api/accounts/{slot}/send"
                try:
                    if call_worker("POST", url, body)[0] in (200, 202):
                        break
                except OSError:
                    pass  # the worker is down: the same request again, soon
                time.sleep(0.1)
            with self._lock:
                self.posted += 1
            time.sleep(0.03)  # spread the messages over the receiver's bad times

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(120)
            assert not thread.is_alive(), "a sender did not finish"


def log_in(worker: Worker, slot: str) -> None:
    base = f"{worker.base}/api/accounts/{slot}"
    assert call_worker("POST", f"{base}/connect")[0] == 200
    assert call_worker("POST", f"{base}/scan")[1]["status"] == "CONNECTED"


def retries(log: Path, reason: str) -> int:
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return sum(
        1 for line in lines if line.get("event") == "webhook_retry" and line["reason"] == reason
    )


def test_a_thousand_messages_reach_a_failing_receiver_through_a_crash_each_once_in_order(
    tmp_path: Path, receiver: FlakyReceiver
) -> None:
    began = time.monotonic()
    receiver.subscribe(tmp_path / "config", "crm", ["message.received"])
    workers = {name: start(tmp_path, name) for name in SHARDS}
    senders = Senders(workers)
    try:
        for worker in workers.values():
            eventually(partial(registered, worker.work_dir), f"{worker.name} read the subscription")
        for slot in (*SENDERS, *RECIPIENTS):
            log_in(workers[shard_of(slot)], slot)
        senders.start()

        eventually(lambda: senders.posted >= MESSAGES * 2 // 5, "two fifths sent", 60)
        # Killed while the receiver takes its time over a delivery it will answer 200:
        # the worker never learns, and its next life sends that event again.
        receiver.hold_next = {"A2", "A3"}
        eventually(lambda: receiver.holding & {"A2", "A3"}, "a slow delivery of w1's", 30)
        w1 = workers["w1"]
        w1.process.kill()
        at_kill = undelivered(w1.work_dir)
        print(f"at SIGKILL of w1: {senders.posted} sent, {at_kill} of its events undelivered")
        assert at_kill > 0, "the kill must land while w1 still has events to deliver"
        workers["w1"] = start(tmp_path, "w1", w1.port)

        eventually(lambda: senders.posted >= MESSAGES * 13 // 20, "two thirds sent", 60)
        receiver.down()
        time.sleep(DOWN_S)
        receiver.up()
        senders.join()

        def all_received() -> bool:
            return sum(1 for e in receiver.delivered() if e["type"] == "message.received") >= (
                MESSAGES
            ) and all(undelivered(w.work_dir) == 0 for w in workers.values())

        eventually(all_received, "every message.received delivered", 60, every=0.5)
    finally:
        for worker in workers.values():
            worker.process.stop()

    delivered = receiver.delivered()
    assert {e["type"] for e in delivered} == {"message.received"}  # the subscription's only
    stored = {name: received_in_outbox(w.work_dir) for name, w in workers.items()}
    # Exactly the 1,000 messages, each once: one event per message in the outboxes, and
    # the receiver has every one of them and nothing else.
    bodies = sorted(e["data"]["body"] for e in delivered)
    assert bodies == [f"m{i:04d}" for i in range(MESSAGES)]
    assert sum(len(events) for events in stored.values()) == MESSAGES
    assert receiver.bad_signatures == 0
    for slot in RECIPIENTS:
        # The promise: each slot's events in the order of its outbox (first 2xx of each id).
        arrived = [e["id"] for e in delivered if e["slot"] == slot]
        assert arrived == [i for s, i in stored[shard_of(slot)] if s == slot], f"{slot} order"
        # What follows from it: each sender's messages to the slot in the order sent.
        for sender in SENDERS:
            phone = phone_of(Slot.parse(sender))
            mine = [
                e["data"]["body"]
                for e in delivered
                if (e["slot"], e["data"]["from"]) == (slot, phone)
            ]
            assert mine == sorted(mine), f"{sender} -> {slot} out of order"

    attempts = len(receiver.arrivals)
    failed = sum(1 for a in receiver.arrivals if a.status == 500)
    repeats = sum(1 for a in receiver.arrivals if a.status == 200) - len(receiver.delivered())
    refused = sum(retries(tmp_path / f"{name}.log", "connect") for name in SHARDS)
    print(
        f"{MESSAGES} messages, {attempts} deliveries answered: {failed} with 500, "
        f"{receiver.slow} slow ({SLOW_S:g} s), {repeats} repeats of a delivered event "
        f"(dropped by webhook-id); {refused} attempts refused or cut (down {DOWN_S:g} s, "
        f"crash); {time.monotonic() - began:.1f} s"
    )
    assert failed > 0
    assert receiver.slow > 0
    assert refused > 0
    assert repeats > 0
