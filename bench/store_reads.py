"""Read latency of the data API on a big shard database: worker, master, and the SQL floor.

A probe is one request (a worker operation named as `wasp.worker_api` declares it, or
a master route of its own table by path, so method and path come from the one
declaration), the targets it is measured at, and the
SELECTs that answer it, run on a fresh sqlite3 connection of this process: the
floor, what the same query costs without HTTP, JSON or the worker's thread. Each
target is measured closed loop by one client (one keep-alive connection, the
next request when the answer came), after a warm-up.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasp_master.across import ROUTES

from tests.support.worker import CREDENTIAL
from wasp.worker_api import ENDPOINTS

WARMUP = 50
CALLS = 400
MIN_CALLS = 5
WARMUP_S = 5.0
BUDGET_S = 20.0
Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Probe:
    """One measured request: `operation` (a worker operation's name, or the path of one of
    the master's own routes) with its path parameters, query or body; the targets it is
    measured at; the statements of its floor. `goal_ms` is the p99 goal."""

    name: str
    operation: str
    params: dict[str, str]
    floor: list[Statement]
    goal_ms: float
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    at: tuple[str, ...] = ("worker", "master")

    def request(self) -> tuple[str, str, bytes | None]:
        """(method, path and query, body) from the operation's declaration."""
        declared = [(e.method, e.path) for e in ENDPOINTS if e.name == self.operation]
        declared += [(r.method, r.path) for r in ROUTES if r.path == self.operation]
        [(method, template)] = declared
        path = template.format(**{k: urllib.parse.quote(v) for k, v in self.params.items()})
        if self.query:
            path += "?" + urllib.parse.urlencode(self.query)
        body = json.dumps(self.body).encode() if self.body is not None else None
        return method, path, body


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2)}


def sample(call: Callable[[], None]) -> list[float]:
    """Milliseconds of each of CALLS calls after WARMUP; a read slow enough to pass the
    time budgets stops early (warm-up after WARMUP_S, measuring after BUDGET_S once it
    has MIN_CALLS), and says so by its count."""
    started = time.monotonic()
    for _ in range(WARMUP):
        call()
        if time.monotonic() - started > WARMUP_S:
            break
    samples: list[float] = []
    began = time.monotonic()
    while len(samples) < CALLS and (
        len(samples) < MIN_CALLS or time.monotonic() - began < BUDGET_S
    ):
        at = time.perf_counter()
        call()
        samples.append((time.perf_counter() - at) * 1000)
    return samples


def over_http(port: int, probe: Probe) -> dict[str, float]:
    """p50 and p99 in ms, closed loop, one client on one keep-alive connection."""
    method, path, body = probe.request()
    headers = {**CREDENTIAL, "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    size = 0

    def call() -> None:
        nonlocal size
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{probe.name}: {response.status} {answer[:300]!r}")
        size = len(answer)

    try:
        samples = sample(call)
    finally:
        connection.close()
    return {**percentiles(samples), "calls": len(samples), "bytes": size}


def floor(database: Path, probe: Probe) -> dict[str, float]:
    """The probe's statements on a fresh connection (read only), every row fetched."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:

        def call() -> None:
            for sql, args in probe.floor:
                db.execute(sql, args).fetchall()

        samples = sample(call)
    return {**percentiles(samples), "calls": len(samples)}


def plans(database: Path, probe: Probe) -> list[str]:
    """EXPLAIN QUERY PLAN of each floor statement: the why of a missed goal."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return [
            " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            for sql, args in probe.floor
        ]


def measure(
    database: Path, probes: list[Probe], targets: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Each probe at each target (name -> port) and at its floor."""
    results: dict[str, dict[str, Any]] = {}
    for probe in probes:
        got: dict[str, Any] = {"goal_ms": probe.goal_ms, "plan": plans(database, probe)}
        got["floor"] = floor(database, probe)
        for target, port in targets.items():
            if target not in probe.at:
                continue
            got[target] = over_http(port, probe)
            got[f"{target}_to_floor"] = round(got[target]["p99_ms"] / got["floor"]["p99_ms"], 2)
        results[probe.name] = got
        print(f"store: {probe.name}: {json.dumps(got)}", file=sys.stderr, flush=True)
    return results
