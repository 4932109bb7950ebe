"""Live events from the master to 1,000 Socket.IO clients: delivered per second,
delay from the sender to each client and to the last client, and whether every
client got every event exactly once.

A simulator `wasp worker` and a `wasp master` in local mode; the clients are the
real npm socket.io-client, SOCKETS sockets in NODE_PROCESSES node processes
(bench/js/fanout.mjs), each socket joined to the room `all`. Events enter the
master as a worker pushes them, `POST /internal/emit` with the master token and
an event id, stamped with the machine's monotonic clock in ms just before the
POST; the clients read the same clock (CLOCK_MONOTONIC) at arrival. Two views
of the delay: each delivery (one event at one socket), and each event's last
delivery (the delay until every socket had it). First WARMUP events at the
steady rate, not in the figures (the first ones after the sockets connect run
through code not yet optimized, mostly in node), then STEADY events at a fixed
rate, then BURST events sent back to back; every socket must get every one of
them exactly once. The CPU time the master and the node
processes used in each phase is read from /proc, to show what bounds the delay.
Bounded: a fixed number of events, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.stack import start_pair
from tests.support.cluster import ROOT
from tests.support.processes import ProgramProcess

SOCKETS = 1000
# The clients stand in for browsers on other machines, yet here they share the
# master's 2 cores: one node process leaves the master a core; with two, the
# clients' own work (as much CPU per event as the master's) took turns with the
# master on both cores and added to the delay. BENCH_NODE_PROCESSES overrides.
NODE_PROCESSES = int(os.environ.get("BENCH_NODE_PROCESSES", "1"))
WARMUP = 10
STEADY = 100
STEADY_PER_S = 5
BURST = 200
EVENTS = WARMUP + STEADY + BURST
TOKEN = "bench-master-token"
SCRIPT = ROOT / "bench" / "js" / "fanout.mjs"


class Clients:
    """One node process holding `sockets` socket.io-client connections."""

    def __init__(self, url: str, sockets: int, events: int) -> None:
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), url, str(sockets), str(events)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.received = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            record = json.loads(line)
            if record["type"] == "progress":
                self.received = record["received"]
            else:
                self.lines.put(record)

    def next(self, kind: str, timeout_s: float) -> dict[str, Any]:
        record = self.lines.get(timeout=timeout_s)
        if record["type"] != kind:
            raise RuntimeError(f"expected {kind!r} from the clients, got {record}")
        return record

    def report(self, events: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"report {events}\n")
        self.process.stdin.flush()
        return self.next("report", 30)

    def stop(self) -> None:
        # After its report the process exits by itself; a moment for that first.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def wait_for(clients: list[Clients], total: int, timeout_s: float) -> None:
    """Until the clients together have `total` events, or nothing arrives for `timeout_s`."""
    last, since = -1, time.monotonic()
    while (now := sum(c.received for c in clients)) < total:
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > timeout_s:
            return
        time.sleep(0.05)


async def send(
    master: str, first: int, count: int, phase: str, per_s: float | None
) -> tuple[int, float, dict[str, float]]:
    """POST events `first`..`first + count - 1`, paced at `per_s` (None: back to back),
    one at a time as a worker does.

    Returns how many the master did not report as delivered, the events sent per
    second, and the POSTs' round trip p50/p99: the master answers once it has
    written the event to every socket (or queued it, for a socket still busy
    writing), so this is its own part of the delay, without the clients'."""
    refused = 0
    answered: list[float] = []
    started = time.monotonic()
    async with aiohttp.ClientSession(headers={"x-master-token": TOKEN}) as http:
        for i in range(count):
            if per_s is not None:
                await asyncio.sleep(max(0.0, started + i / per_s - time.monotonic()))
            n = first + i
            sent_at = time.monotonic_ns() / 1e6
            body = {
                "event": "bench:tick",
                "id": f"bench.{n}",
                "shard": "w1",
                "payload": {
                    "slot": "A1",
                    "n": n,
                    "phase": phase,
                    "sentAt": sent_at,
                },
            }
            async with http.post(f"{master}/internal/emit", json=body) as response:
                answer = await response.json()
                refused += 0 if response.status == 200 and answer.get("delivered") else 1
            answered.append(time.monotonic_ns() / 1e6 - sent_at)
    answered.sort()
    post = {
        "post_p50_ms": round(statistics.median(answered), 1),
        "post_p99_ms": _percentile(answered, 0.99),
    }
    return refused, count / (time.monotonic() - started), post


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(ordered: list[float], fraction: float) -> float:
    return round(ordered[math.ceil(len(ordered) * fraction) - 1], 1)


def phase_figures(reports: list[dict[str, Any]], phase: str, events: int) -> dict[str, Any]:
    parts = [p for r in reports if (p := r["phases"].get(phase))]
    latencies = sorted(x for p in parts for x in p["latencies"])
    if not latencies:
        return {"events": events, "deliveries": 0}
    first = min(p["firstSent"] for p in parts)
    last = max(p["lastReceived"] for p in parts)
    # Each event's delay to its first and to its last socket, over all node processes.
    to_first: dict[str, float] = {}
    to_last: dict[str, float] = {}
    for p in parts:
        for n, (earliest, latest) in p["spread"].items():
            to_first[n] = min(to_first.get(n, math.inf), earliest)
            to_last[n] = max(to_last.get(n, 0.0), latest)
    lasts = sorted(to_last.values())
    return {
        "events": events,
        "deliveries": len(latencies),
        "seconds": round((last - first) / 1000, 2),
        "deliveries_per_s": round(len(latencies) / ((last - first) / 1000)),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": round(latencies[-1], 1),
        "first_p50_ms": round(statistics.median(to_first.values()), 1),
        "last_p50_ms": round(statistics.median(lasts), 1),
        "last_p99_ms": _percentile(lasts, 0.99),
    }


class CpuMeter:
    """CPU seconds used by the master and by the node processes during a phase."""

    def __init__(self, master: int, clients: list[Clients]) -> None:
        self.pids = {"master": [master], "clients": [c.process.pid for c in clients]}
        self.start = self.read()

    def read(self) -> dict[str, float]:
        return {name: sum(cpu_s(pid) for pid in pids) for name, pids in self.pids.items()}

    def per_event_ms(self, events: int) -> dict[str, float]:
        now = self.read()
        used = {name: round((now[name] - self.start[name]) * 1000 / events, 1) for name in now}
        self.start = now
        return used


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wasp-bench-events-", dir=Path.cwd() / ".cache") as t:
        tmp = Path(t)
        programs: list[ProgramProcess] = []
        clients: list[Clients] = []
        try:
            _, master_port = start_pair(tmp, programs, MASTER_TOKEN=TOKEN)
            master = f"http://127.0.0.1:{master_port}"
            started = time.monotonic()
            clients = [
                Clients(master, SOCKETS // NODE_PROCESSES, EVENTS) for _ in range(NODE_PROCESSES)
            ]
            ready = [c.next("ready", 120) for c in clients]
            connect_s = time.monotonic() - started
            joined = sum(r["joined"] for r in ready)
            refused, _, _ = asyncio.run(send(master, 1, WARMUP, "warmup", STEADY_PER_S))
            wait_for(clients, joined * WARMUP, 10)
            cpu = CpuMeter(programs[-1].pid, clients)
            lost, steady_sent, steady_post = asyncio.run(
                send(master, WARMUP + 1, STEADY, "steady", STEADY_PER_S)
            )
            refused += lost
            wait_for(clients, joined * (WARMUP + STEADY), 10)
            steady_cpu = cpu.per_event_ms(STEADY)
            lost, burst_sent, burst_post = asyncio.run(
                send(master, WARMUP + STEADY + 1, BURST, "burst", None)
            )
            refused += lost
            wait_for(clients, joined * EVENTS, 10)
            burst_cpu = cpu.per_event_ms(BURST)
            reports = [c.report(EVENTS) for c in clients]
            load_after = os.getloadavg()[0]
        finally:
            for c in clients:
                c.stop()
            for program in reversed(programs):
                program.stop()
    return {
        "sockets": SOCKETS,
        "node_processes": NODE_PROCESSES,
        "joined": joined,
        "connect_and_join_s": round(connect_s, 1),
        "warmup_events": WARMUP,
        "steady_per_s": STEADY_PER_S,
        "steady": {
            **phase_figures(reports, "steady", STEADY),
            "sent_per_s": round(steady_sent, 1),
            **steady_post,
            "cpu_ms_per_event": steady_cpu,
        },
        "burst": {
            **phase_figures(reports, "burst", BURST),
            "sent_per_s": round(burst_sent, 1),
            **burst_post,
            "cpu_ms_per_event": burst_cpu,
        },
        "load_after": round(load_after, 1),
        "not_delivered_by_master": refused,
        "missing": sum(r["missing"] for r in reports),
        "duplicates": sum(r["duplicates"] for r in reports),
        "disconnects": sum(r["disconnects"] for r in reports),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
