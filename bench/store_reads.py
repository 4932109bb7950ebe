"""Read latency of the data API on a big shard database: worker, master, and the SQL floor.

A probe is one request (a worker operation named as `wasp.worker_api` declares it, or
a master route of its own table by path, so method and path come from the one
declaration), the targets it is measured at, and the
SELECTs that answer it, run on a fresh sqlite3 connection of this process: the
floor, what the same query costs without HTTP, JSON or the worker's thread. Next to
it, from `bench.store_floor_http`: the HTTP floor (the same SELECTs answered by a
minimal aiohttp handler, the rows as JSON), so the worker's time over it is what wasp
adds beyond the transport; the bytes alone (the same answer with no work: what the
round trip itself costs); and, for reads through the master, the hop floor (the HTTP
floor behind one minimal aiohttp hop). Each target is measured closed loop by one
client (one keep-alive connection, the next request when the answer came), after a
warm-up.
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

from bench.store_floor_http import FloorServer
from tests.support.processes import free_port
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


def interleaved(
    calls: dict[str, Callable[[], None]], min_calls: int = MIN_CALLS
) -> dict[str, list[float]]:
    """Milliseconds of CALLS calls of each, after WARMUP, taken in turns (one call of each
    per round), so a burst of load on the shared machine falls on all of them alike. A
    read slow enough to pass the time budgets stops early (warm-up after WARMUP_S,
    measuring after BUDGET_S once each has `min_calls`), and says so by its count."""
    started = time.monotonic()
    for _ in range(WARMUP):
        for call in calls.values():
            call()
        if time.monotonic() - started > WARMUP_S:
            break
    samples: dict[str, list[float]] = {name: [] for name in calls}
    began = time.monotonic()
    for done in range(CALLS):
        if done >= min_calls and time.monotonic() - began > BUDGET_S:
            break
        for name, call in calls.items():
            at = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - at) * 1000)
    return samples


class HttpTarget:
    """The probe's request over one keep-alive connection, the answer read whole (`path`:
    another GET instead, as the HTTP floor's)."""

    def __init__(self, port: int, probe: Probe, path: str | None = None) -> None:
        self.method, self.path, self.body = probe.request() if path is None else ("GET", path, None)
        self.name = probe.name
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.size = 0

    def __call__(self) -> None:
        headers = {**CREDENTIAL, "Content-Type": "application/json"}
        self.connection.request(self.method, self.path, body=self.body, headers=headers)
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.name}: {response.status} {answer[:300]!r}")
        self.size = len(answer)


def floor_call(db: sqlite3.Connection, probe: Probe) -> Callable[[], None]:
    """The probe's statements on the floor's connection, every row fetched."""

    def call() -> None:
        for sql, args in probe.floor:
            db.execute(sql, args).fetchall()

    return call


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
    """Each probe at each of its targets (name -> port), at its floor (a fresh sqlite3
    connection of this process, read only, on the same file) and at its HTTP floor (the
    same SELECTs behind a minimal aiohttp handler, on the same file)."""
    results: dict[str, dict[str, Any]] = {}
    server = FloorServer(
        database, [p.floor for p in probes], free_port(), database.parent / "floor-http.log"
    )
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            for n, probe in enumerate(probes):
                results[probe.name] = _measure_one(db, database, probe, targets, server.port, n)
    finally:
        server.stop()
    return results


def _measure_one(
    db: sqlite3.Connection,
    database: Path,
    probe: Probe,
    targets: dict[str, int],
    floor_port: int,
    n: int,
) -> dict[str, Any]:
    http = {t: HttpTarget(port, probe) for t, port in targets.items() if t in probe.at}
    http["http_floor"] = HttpTarget(floor_port, probe, f"/floor/{n}")
    http["bytes"] = HttpTarget(floor_port, probe, f"/bytes/{n}")
    if "master" in probe.at:
        http["hop_floor"] = HttpTarget(floor_port, probe, f"/hop/{n}")
    try:
        samples = interleaved({"floor": floor_call(db, probe), **http})
    finally:
        for target in http.values():
            target.connection.close()
    got: dict[str, Any] = {"goal_ms": probe.goal_ms, "plan": plans(database, probe)}
    floor = got["floor"] = {**percentiles(samples["floor"]), "calls": len(samples["floor"])}
    for name, target in http.items():
        here = got[name] = {
            **percentiles(samples[name]),
            "calls": len(samples[name]),
            "bytes": target.size,
        }
        got[f"{name}_to_floor"] = round(here["p99_ms"] / floor["p99_ms"], 2)
        got[f"{name}_to_floor_p50"] = round(here["p50_ms"] / floor["p50_ms"], 2)
    # Each target over the floor of its own place: the worker answers the client, the
    # master answers it through one hop.
    for name, web_floor in (("worker", "http_floor"), ("master", "hop_floor")):
        if name in got:
            got[f"{name}_to_http_floor"] = round(got[name]["p99_ms"] / got[web_floor]["p99_ms"], 2)
            got[f"{name}_to_http_floor_p50"] = round(
                got[name]["p50_ms"] / got[web_floor]["p50_ms"], 2
            )
    print(f"store: {probe.name}: {json.dumps(got)}", file=sys.stderr, flush=True)
    return got
