"""One shard's webhook delivery to a local receiver (`bench.webhook_receiver`, its
own process on 127.0.0.1, answering 204 at once and checking a sample of the
signatures).

(a) Throughput: EVENTS events over SLOTS slots already in the outbox, one
subscription; the time until the receiver has every one and the outbox has
every one marked delivered. (b) Latency: events added at RATE/s for STEADY_S
through the write path the worker's code uses (`outbox.add` in a transaction,
then `added()`), each stamped with the monotonic clock once committed; the
receiver stamps its arrival with the same clock. It runs on (a)'s database:
delivered events stay in the outbox for the horizon, a day. (c) Memory: a real `wasp
worker` whose subscription's receiver refuses connections, idle and then with
QUEUED events undelivered in its outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from wasp_worker.db import transaction
from wasp_worker.events import EventLog
from wasp_worker.store import FILE, ShardStore
from wasp_worker.webhooks import outbox
from wasp_worker.webhooks.delivery import Backoff
from wasp_worker.webhooks.http import CONSUMER_PREFIX
from wasp_worker.webhooks.service import Webhooks

from bench.event_fanout import cpu_s
from bench.worker_queue import rss_mb
from tests.support.processes import free_port, http_ok
from tests.support.worker import start_worker
from wasp.webhooks import Event, new_secret

EVENTS = 20_000
SLOTS = 10
RATE = 200
STEADY_S = 10
QUEUED = 100_000
VERIFY_EVERY = 50
SUBSCRIPTION = "bench"
CONSUMER = CONSUMER_PREFIX + SUBSCRIPTION
WRITE_BATCH = 1_000
MEMORY_SETTLE_S = 10


def event(n: int) -> Event:
    """A `message.received` of the size an inbound text has."""
    slot = f"A{n % SLOTS + 1}"
    return Event.new(
        "message.received",
        slot,
        {
            "slot": slot,
            "from": f"5511{n:09d}",
            "to": "5511900000000",
            "body": f"message {n}: a short text, as most are",
            "chat_id": f"5511{n:09d}@s.whatsapp.net",
            "chat_type": "user",
            "sender_jid_raw": f"5511{n:09d}@s.whatsapp.net",
            "push_name": "Bench",
            "wa_message_id": f"3EB0{n:016X}",
            "timestamp": 1767607200 + n,
            "media_type": None,
            "from_me": False,
        },
    )


def configure(config: Path, url: str, secret: str) -> None:
    config.mkdir(parents=True, exist_ok=True)
    subscription = {"id": SUBSCRIPTION, "url": url, "events": ["message.received"]}
    document = {"subscriptions": [subscription], "allow": ["127.0.0.0/8"]}
    (config / "webhooks.json").write_text(json.dumps(document))
    (config / "webhook-secrets.json").write_text(json.dumps({SUBSCRIPTION: secret}))


class Receiver:
    """The receiver's process."""

    def __init__(self, secret: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = ["bench.webhook_receiver", str(self.port), secret, str(VERIFY_EVERY)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not http_ok(self.url + "/count"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.05)

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    async def count(self) -> int:
        return int((await asyncio.to_thread(self.get, "/count"))["count"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def webhooks_for(root: Path, url: str, secret: str) -> tuple[ShardStore, Webhooks]:
    configure(root / "config", url + "/hook", secret)
    store = ShardStore.in_folder(root / "data")
    hooks = Webhooks(
        store.outbox,
        root / "config",
        None,
        EventLog(stream=io.StringIO()),
        CollectorRegistry(),
        backoff=Backoff(base_s=0.05, cap_s=1.0),
    )
    await hooks.open()
    hooks.sinks()
    await store.outbox.register(CONSUMER)
    return store, hooks


async def delivered_all(store: ShardStore) -> bool:
    return not (await store.outbox.backlog(CONSUMER)).heads


async def stop(hooks: Webhooks, task: asyncio.Task[None], store: ShardStore) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await hooks.close()
    store.close()


async def throughput(root: Path, receiver: Receiver, secret: str) -> dict[str, Any]:
    """EVENTS already in the outbox: seconds until received, and until all marked."""
    store, hooks = await webhooks_for(root, receiver.url, secret)
    events = [event(n) for n in range(EVENTS)]
    for start in range(0, EVENTS, WRITE_BATCH):
        await store.outbox.write(events[start : start + WRITE_BATCH])
    before = await receiver.count()
    started, cpu = time.monotonic(), time.process_time()
    task = asyncio.create_task(hooks.run())
    received_s = None
    while True:
        if received_s is None and await receiver.count() - before >= EVENTS:
            received_s = time.monotonic() - started
        if received_s is not None and await delivered_all(store):
            break
        if time.monotonic() - started > 300:
            raise RuntimeError("throughput: not all delivered within 300 s")
        await asyncio.sleep(0.05)
    marked_s = time.monotonic() - started
    cpu_s = time.process_time() - cpu
    await stop(hooks, task, store)
    return {
        "events": EVENTS,
        "slots": SLOTS,
        "received_s": round(received_s, 2),
        "marked_s": round(marked_s, 2),
        "per_s": round(EVENTS / marked_s),
        "cpu_ms_per_1000": round(cpu_s / EVENTS * 1e6),
    }


async def latency(root: Path, receiver: Receiver, secret: str) -> dict[str, Any]:
    """RATE/s for STEADY_S through the write path; arrival - commit per event."""
    store, hooks = await webhooks_for(root, receiver.url, secret)
    task = asyncio.create_task(hooks.run())
    committed: dict[str, float] = {}

    def write(db: sqlite3.Connection, made: Event) -> None:
        with transaction(db):
            outbox.add(db, [made])
        committed[made.id] = time.monotonic()

    total = RATE * STEADY_S
    started = time.monotonic()
    for n in range(total):
        await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
        made = event(n)
        await store.db.call(partial(write, made=made))
        store.outbox.added()
    sent_s = time.monotonic() - started
    while not await delivered_all(store) or len(committed) < total:
        if time.monotonic() - started > STEADY_S + 120:
            raise RuntimeError("latency: not all delivered within 120 s of the last")
        await asyncio.sleep(0.05)
    await stop(hooks, task, store)
    report = await asyncio.to_thread(receiver.get, "/arrivals")
    delays = sorted((report["at"][i] - at) * 1000 for i, at in committed.items())
    cuts = statistics.quantiles(delays, n=100)
    return {
        "rate": RATE,
        "seconds": STEADY_S,
        "events": total,
        "achieved_per_s": round(total / sent_s),
        "p50_ms": round(cuts[49], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(delays[-1], 1),
        "bad_signatures": report["bad"],
        "verified": report["verified"],
        "verify_every": VERIFY_EVERY,
    }


def queue_events(path: Path, count: int) -> None:
    """Add `count` events to a running worker's database from this process."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as db:
        for start in range(0, count, WRITE_BATCH):
            with transaction(db):
                outbox.add(db, [event(n) for n in range(start, min(count, start + WRITE_BATCH))])


def lane_attempts(path: Path) -> tuple[int, list[str]]:
    with closing(sqlite3.connect(path, timeout=30)) as db:
        rows = db.execute(
            "SELECT attempts, last_error FROM outbox_lanes WHERE consumer = ?", (CONSUMER,)
        ).fetchall()
    return sum(row[0] for row in rows), sorted({str(row[1]) for row in rows})


def rss_over(pid: int, seconds: float) -> float:
    """The highest VmRSS sampled every 0.1 s for `seconds`."""
    highest = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        highest = max(highest, rss_mb(pid))
        time.sleep(0.1)
    return highest


def memory(root: Path, secret: str) -> dict[str, Any]:
    """A real `wasp worker`, its receiver refusing connections: idle, then QUEUED waiting."""
    refused = f"http://127.0.0.1:{free_port()}"
    configure(root / "config", refused + "/hook", secret)
    database = root / "worker" / FILE
    worker = start_worker(
        root / "worker.log", free_port(), root / "worker", root / "config", WARMUP_LIMIT="0"
    )
    try:
        worker.wait_until(
            lambda: database.exists() and bool(lane_registered(database)),
            "the worker registers the subscription",
        )
        idle = rss_over(worker.pid, MEMORY_SETTLE_S)
        started = time.monotonic()
        queue_events(database, QUEUED)
        written_s = time.monotonic() - started
        cpu = cpu_s(worker.pid)
        queued = rss_over(worker.pid, MEMORY_SETTLE_S)
        cpu = cpu_s(worker.pid) - cpu
        attempts, errors = lane_attempts(database)
    finally:
        worker.stop()
    return {
        "queued": QUEUED,
        "write_s": round(written_s, 1),
        "idle_mb": round(idle, 1),
        "queued_mb": round(queued, 1),
        "growth_mb": round(queued - idle, 1),
        "attempts": attempts,
        "errors": errors,
        "settle_s": MEMORY_SETTLE_S,
        "cpu_s_queued": round(cpu, 2),
    }


def lane_registered(path: Path) -> bool:
    with closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            row = db.execute(
                "SELECT 1 FROM outbox_consumers WHERE consumer = ?", (CONSUMER,)
            ).fetchone()
        except sqlite3.OperationalError:
            return False
    return row is not None


def run() -> dict[str, Any]:
    cache = Path.cwd() / ".cache"
    cache.mkdir(exist_ok=True)
    secret = new_secret()
    with tempfile.TemporaryDirectory(prefix="wasp-bench-webhooks-", dir=cache) as tmp:
        root = Path(tmp)
        receiver = Receiver(secret)
        try:
            # Latency on the same database: delivered events stay in the outbox for the
            # horizon (a day), so a shard's outbox is seldom as empty as a new one.
            fast = asyncio.run(throughput(root / "shard", receiver, secret))
            steady = asyncio.run(latency(root / "shard", receiver, secret))
        finally:
            receiver.stop()
        held = memory(root / "memory", secret)
    return {"throughput": fast, "latency": steady, "memory": held}
