"""The sending engine and the durable enqueue under concurrency.

(a) 50 CONNECTED sessions whose every send takes 300 ms (a fake backend: the
engine is what is measured): messages/s of the engine with its lanes, next to the
same engine held to one send at a time for the whole shard (SEND_CONCURRENCY=1,
what the worker did before lanes); every send is logged and checked against
the token-bucket bound of the pace. (b) 32 clients enqueueing at once: the
queue's group commit next to raw SQLite with one commit per insert, same disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from wasp_worker.config import WorkerConfig
from wasp_worker.events import EventLog
from wasp_worker.outbound import OutboundRunner, SendSettings
from wasp_worker.pacer import Pacer
from wasp_worker.queue import OutboundQueue
from wasp_worker.sessions import SessionManager, SessionState
from wasp_worker.store import ShardStore

from bench.worker_queue import raw_inserts
from wasp.messages import TextMessage
from wasp.pacing import Pacing, Rate
from wasp.slots import Slot

SESSIONS = 50
SEND_S = 0.3
CHATS = 4
PER_SESSION = 20  # lanes: 1,000 messages
BASELINE_MESSAGES = 60  # one at a time: 18 s
CONCURRENCY = 32
PACE = Pacing(
    session=Rate(perMinute=120, burst=5), recipient=Rate(perMinute=60, burst=3), jitter=0.2
)
CLIENTS = 32
PER_CLIENT = 125  # 4,000 enqueues


class SlowBackend:
    """Every send takes SEND_S; each one's start is logged (slot, chat, monotonic time)."""

    on_inbound = None
    on_receipt = None

    def __init__(self) -> None:
        self.log: list[tuple[str, str, float]] = []

    async def send(self, slot: Slot, message: Any) -> None:
        self.log.append((str(slot), message.destination, time.monotonic()))
        await asyncio.sleep(SEND_S)

    async def start(self, slot: Slot, on_status: Any) -> None:
        raise NotImplementedError

    async def stop(self, slot: Slot) -> None:
        return None

    async def logout(self, slot: Slot) -> None:
        return None

    async def pair(self, slot: Slot, phone: str) -> str:
        raise NotImplementedError

    async def mark_read(self, slot: Slot, chat_id: str, sender: Any, ids: list[str]) -> None:
        return None

    async def phone_for_lid(self, slot: Slot, lid: str) -> str | None:
        return None

    async def close(self) -> None:
        return None


def conforms(times: list[float], rate: Rate) -> bool:
    """Over any stretch [t_i, t_j] of sends: at most burst + perMinute * (t_j - t_i) / 60."""
    times = sorted(times)
    return all(
        j - i + 1 <= rate.burst + rate.perMinute * (times[j] - times[i]) / 60 + 1e-9
        for i in range(len(times))
        for j in range(i, len(times))
    )


async def drain(root: Path, concurrency: int, per_session: int, total: int) -> dict[str, Any]:
    """Queue `total` messages over the sessions, run the engine until all are sent."""
    backend = SlowBackend()
    settings = WorkerConfig.model_validate(
        {
            "slot_from": "A1",
            "slot_to": f"A{SESSIONS}",
            "max_active": SESSIONS,
            "work_dir": root,
            "backend": "simulator",
        }
    )
    sessions = SessionManager(settings, backend, EventLog(stream=io.StringIO()))  # type: ignore[arg-type]
    slots = [Slot.parse(f"A{n}") for n in range(1, SESSIONS + 1)]
    for slot in slots:
        sessions.states[slot] = SessionState("CONNECTED")
    store = ShardStore(root / f"queue-{concurrency}.sqlite3")
    queue = store.queue
    queued = 0
    for i in range(per_session):
        for n, slot in enumerate(slots):
            if queued == total:
                break
            to = f"55119{n:04d}{i % CHATS:04d}"
            await queue.enqueue(slot, TextMessage(to=to, text=f"m{i}"))
            queued += 1
    runner = OutboundRunner(
        queue,
        sessions,
        sessions.log,
        CollectorRegistry(),
        settings=SendSettings(
            concurrency=concurrency,
            max_attempts=8,
            max_age_s=3600,
            retry_base_s=2,
            retry_cap_s=600,
            timeout_s=60,
        ),
        pacer=Pacer(PACE),
    )
    started = time.monotonic()
    task = asyncio.create_task(runner.run())
    while True:  # until every message is sent: the queue on disk says so
        if len(backend.log) >= total and not await queue.depth():
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    store.close()
    violations = 0
    for slot in slots:
        mine = [(to, at) for s, to, at in backend.log if s == str(slot)]
        violations += not conforms([at for _, at in mine], PACE.session)
        for chat in {to for to, _ in mine}:
            violations += not conforms([at for to, at in mine if to == chat], PACE.recipient)
    return {
        "messages": total,
        "seconds": round(elapsed, 1),
        "per_s": round(total / elapsed, 1),
        "pace_violations": violations,
    }


async def enqueue_clients(path: Path) -> tuple[float, OutboundQueue]:
    store = ShardStore(path)
    queue = store.queue
    slot = Slot.parse("A1")

    async def client(c: int) -> None:
        for i in range(PER_CLIENT):
            await queue.enqueue(
                slot, TextMessage(to="5511999999999", text=f"m{i}", idempotency_key=f"{c}-{i}")
            )

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    rate = CLIENTS * PER_CLIENT / (time.perf_counter() - started)
    store.close()
    return rate, queue


def run() -> dict[str, Any]:
    cache = Path.cwd() / ".cache"
    cache.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wasp-bench-sending-", dir=cache) as tmp:
        root = Path(tmp)
        one = asyncio.run(drain(root, 1, 2, BASELINE_MESSAGES))
        lanes = asyncio.run(drain(root, CONCURRENCY, PER_SESSION, SESSIONS * PER_SESSION))
        raw = raw_inserts(root / "raw.sqlite3")
        grouped, queue = asyncio.run(enqueue_clients(root / "grouped.sqlite3"))
    return {
        "sessions": SESSIONS,
        "send_ms": int(SEND_S * 1000),
        "concurrency": CONCURRENCY,
        "pace": PACE.model_dump(),
        "one_at_a_time": one,
        "lanes": lanes,
        "speedup": round(lanes["per_s"] / one["per_s"], 1),
        "clients": CLIENTS,
        "enqueues": CLIENTS * PER_CLIENT,
        "raw_insert_per_s": round(raw),
        "group_commit_per_s": round(grouped),
        "group_to_raw": round(grouped / raw, 2),
        "commits": queue.stats.commits,
        "largest_batch": queue.stats.largest,
    }
