"""The worker's durable enqueue rate next to raw SQLite inserts on the same disk,
and resident memory per simulator session of a real `wasp worker` process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from wasp_worker.store import ShardStore

from tests.support.processes import free_port
from tests.support.worker import CREDENTIAL, start_worker
from wasp.messages import TextMessage
from wasp.slots import Slot

MESSAGES = 2000
SESSIONS = 500
NEONIZE_SESSIONS = 100


def raw_inserts(path: Path) -> float:
    """Messages/s for bare INSERTs, one committed transaction each, WAL, synchronous=FULL."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, slot TEXT, destination TEXT, body TEXT)")
    started = time.perf_counter()
    for i in range(MESSAGES):
        db.execute(
            "INSERT INTO t (slot, destination, body) VALUES (?, ?, ?)",
            ("A1", "5511999999999@s.whatsapp.net", f"m{i}"),
        )
    rate = MESSAGES / (time.perf_counter() - started)
    db.close()
    return rate


async def durable_enqueues(path: Path) -> float:
    store = ShardStore(path)
    queue = store.queue
    slot = Slot.parse("A1")
    started = time.perf_counter()
    for i in range(MESSAGES):
        await queue.enqueue(
            slot, TextMessage(to="5511999999999", text=f"m{i}", idempotency_key=f"k{i}")
        )
    rate = MESSAGES / (time.perf_counter() - started)
    store.close()
    return rate


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0  # a process that has just exited


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (the neonize cells)."""
    total = rss_mb(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        total += tree_rss_mb(int(child))
    return total


def session_memory(tmp: Path, backend: str, sessions: int, settle_s: float) -> tuple[float, float]:
    """(worker RSS before, extra MB per session after connecting `sessions` slots).

    Neonize runs offline here, so each of its sessions has made one failed connect
    (store created, Go state held); `settle_s` lets cells start and connects fail.
    """
    port = free_port()
    worker = start_worker(
        tmp / f"{backend}.log",
        port,
        tmp / backend,
        tmp / "config",
        SLOT_TO="A1000",
        MAX_ACTIVE="1000",
        MAX_INIT="8",
        WARMUP_LIMIT="0",
        BACKEND=backend,
    )
    try:
        before = tree_rss_mb(worker.pid)
        for n in range(1, sessions + 1):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/accounts/A{n}/connect",
                data=b"{}",
                method="POST",
                headers=CREDENTIAL,
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                json.loads(response.read())
        time.sleep(settle_s)
        after = tree_rss_mb(worker.pid)
    finally:
        worker.stop()
    return before, (after - before) / sessions


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wasp-bench-queue-", dir=Path.cwd() / ".cache") as tmp:
        root = Path(tmp)
        raw = raw_inserts(root / "raw.sqlite3")
        durable = asyncio.run(durable_enqueues(root / "queue.sqlite3"))
        base, per_session = session_memory(root, "simulator", SESSIONS, settle_s=0)
        _, neonize_per_session = session_memory(root, "neonize", NEONIZE_SESSIONS, settle_s=3)
        neonize_total = neonize_per_session * NEONIZE_SESSIONS
    return {
        "messages": MESSAGES,
        "raw_insert_per_s": round(raw),
        "durable_enqueue_per_s": round(durable),
        "enqueue_to_raw_ratio": round(durable / raw, 2),
        "worker_base_rss_mb": round(base, 1),
        "simulator_sessions": SESSIONS,
        "simulator_mb_per_session": round(per_session, 3),
        "neonize_sessions": NEONIZE_SESSIONS,
        "neonize_total_mb": round(neonize_total, 1),
        "neonize_mb_per_session": round(neonize_per_session, 2),
    }
