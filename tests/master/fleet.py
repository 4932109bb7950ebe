"""A real fleet for reads across shards: three simulator workers sharing one simulated
WhatsApp server, a master in front with scoped API keys, and messages between slots
of every shard, each one recorded by the test (what it sent is the oracle's input)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasp_master.keys import hash_key
from wasp_worker.backends.simulator import phone_of

from tests.support.master import start_master
from tests.support.processes import ProgramProcess, free_port
from tests.support.waiting import eventually
from tests.support.worker import call_worker, start_worker
from wasp.slots import Slot

SHARDS = (("w1", "A1", "A10"), ("w2", "A11", "A20"), ("w3", "A21", "A30"))
KEYS: dict[str, dict[str, Any]] = {
    "admin": {"operations": ["admin"]},
    "range": {"operations": ["read"], "slots": ["A1-A15"]},
    "sales": {"operations": ["read"], "workspaces": ["sales"]},
}
SECRET = {name: f"wasp_test_{name}_key_0123456789" for name in KEYS}


@dataclass(frozen=True)
class Sent:
    """One message the test sent: it is stored twice, out on `sender`, in on `receiver`."""

    sender: str
    receiver: str
    body: str


@dataclass
class Fleet:
    root: Path
    master_url: str
    metrics_url: str
    workers: dict[str, ProgramProcess] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, tuple[str, str]] = field(default_factory=dict)
    master: ProgramProcess | None = None
    sent: list[Sent] = field(default_factory=list)

    def shard_of(self, slot: str) -> str:
        parsed = Slot.parse(slot)
        for name, (first, last) in self.ranges.items():
            if Slot.parse(first) <= parsed <= Slot.parse(last):
                return name
        raise LookupError(slot)

    def call(
        self, method: str, path: str, body: Any = None, key: str | None = "admin", **query: Any
    ) -> tuple[int, dict[str, Any]]:
        """One call to the master with a key (None: no key): (status, JSON answer)."""
        given = {
            k: ("true" if v is True else "false" if v is False else v) for k, v in query.items()
        }
        url = self.master_url + path + ("?" + urllib.parse.urlencode(given) if given else "")
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["x-api-key"] = SECRET[key]
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status), json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read())

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the master's /metrics (0 when absent)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def get(self, path: str, key: str = "admin", **query: Any) -> dict[str, Any]:
        code, answer = self.call("GET", path, key=key, **query)
        assert code == 200, (path, query, code, answer)
        return answer


def _worker(root: Path, name: str, first: str, last: str) -> tuple[ProgramProcess, int]:
    port = free_port()
    worker = start_worker(
        root / f"{name}.log",
        port,
        root / name,
        root / "config",
        base_env={"PATH": os.environ["PATH"]},
        SLOT_FROM=first,
        SLOT_TO=last,
        SIMULATOR_SERVER_DIR=str(root / "server"),
    )
    return worker, port


@contextmanager
def running_fleet(
    root: Path, shards: tuple[tuple[str, str, str], ...] = SHARDS, **master_env: str
) -> Iterator[Fleet]:
    """Simulator workers for `shards` ((name, first slot, last slot)) sharing one simulated
    server, and a master in front with the scoped `KEYS`; every process it started is
    stopped on the way out, also when a later one failed to start."""
    (root / "config").mkdir(parents=True, exist_ok=True)
    keys = {"keys": [{"id": n, "hash": hash_key(SECRET[n]), **s} for n, s in KEYS.items()]}
    (root / "keys.json").write_text(json.dumps(keys))
    (root / "config" / "accounts.json").write_text(json.dumps([{"slot": "A1", "ws": "sales"}]))
    port, metrics_port = free_port(), free_port()
    fleet = Fleet(root, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        routes = []
        for name, first, last in shards:
            fleet.workers[name], worker_port = _worker(root, name, first, last)
            fleet.urls[name] = f"http://127.0.0.1:{worker_port}"
            fleet.ranges[name] = (first, last)
            routes.append({"id": name, "port": worker_port, "from": first, "to": last})
        fleet.master = start_master(
            root / "master.log",
            port,
            root / "config",
            base_env={"PATH": os.environ["PATH"]},
            SHARDS_JSON=json.dumps(routes),
            API_KEYS_FILE=str(root / "keys.json"),
            METRICS_PORT=str(metrics_port),
            **master_env,
        )
        yield fleet
    finally:
        if fleet.master is not None:
            fleet.master.stop()
        for worker in fleet.workers.values():
            worker.stop()


def log_in(fleet: Fleet, slot: str) -> None:
    assert fleet.call("POST", f"/api/accounts/{slot}/connect")[0] == 200
    code, answer = fleet.call("POST", f"/api/accounts/{slot}/scan")
    assert (code, answer.get("status")) == (200, "CONNECTED"), answer


def inbound_count(fleet: Fleet, slot: str) -> int:
    base = fleet.urls[fleet.shard_of(slot)]
    events = call_worker("GET", f"{base}/events?limit=5000")[1]["events"]
    return sum(1 for e in events if e["event"] == "wa:message" and e["payload"]["slot"] == slot)


def send_all(fleet: Fleet, plan: list[Sent]) -> None:
    """Send every message of the plan through the master, then wait until each arrived."""
    for n, message in enumerate(plan):
        to = phone_of(Slot.parse(message.receiver))
        code, answer = fleet.call(
            "POST",
            f"/api/accounts/{message.sender}/send",
            {"to": to, "text": message.body, "idempotency_key": f"plan-{len(fleet.sent)}-{n}"},
        )
        assert code == 202, answer
    fleet.sent.extend(plan)
    expected: dict[str, int] = {}
    for message in fleet.sent:
        expected[message.receiver] = expected.get(message.receiver, 0) + 1
    for slot, count in expected.items():

        def arrived(slot: str = slot, count: int = count) -> bool:
            return inbound_count(fleet, slot) >= count

        eventually(arrived, f"{count} to {slot}", 60)
