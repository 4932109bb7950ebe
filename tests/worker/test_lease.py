"""One owner per shard in Kubernetes: workers hold a coordination.k8s.io Lease (real apiserver).

The fence tests run two real workers for one range and let the simulator's
server ledger (which session was open where, on the system-wide monotonic
clock) show that no account was ever open on both at once.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.cluster import LocalCluster, libfaketime
from tests.support.processes import ProgramProcess, free_port
from tests.support.tcp_proxy import FreezableProxy
from tests.support.worker import CREDENTIAL, start_worker

pytestmark = pytest.mark.cluster

LEASE_S = 3  # renew deadline 2 s, retry period 0.6 s
SLOTS = ("A1", "A2")
LEASE = "wasp-shard-w1"


def call(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, object]]:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=CREDENTIAL
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


def connect(port: int, slot: str) -> tuple[int, str]:
    status, body = call(port, f"/api/accounts/{slot}/connect", "POST")
    return status, str(body.get("error", ""))


def ready(port: int) -> int:
    return call(port, "/ready")[0]


def slot_status(port: int, slot: str) -> str:
    return str(call(port, f"/api/accounts/{slot}/status")[1].get("status"))


def active(port: int) -> int:
    worker = call(port, "/health")[1]["worker"]
    assert isinstance(worker, dict)
    return int(worker["active"])


def shows_qr(port: int, slot: str) -> Callable[[], bool]:
    return lambda: call(port, f"/api/accounts/{slot}/status")[1].get("qr") is not None


def status_is(port: int, slot: str, *wanted: str) -> Callable[[], bool]:
    return lambda: slot_status(port, slot) in wanted


def start(
    cluster: LocalCluster, namespace: str, pod: str, tmp_path: Path, **env: str
) -> tuple[ProgramProcess, int]:
    port = free_port()
    worker = start_worker(
        tmp_path / f"{pod}.log",
        port,
        tmp_path / pod,
        tmp_path / "config",
        base_env=cluster.env(),
        SHARD_NAME="w1",
        POD_NAMESPACE=namespace,
        POD_NAME=pod,
        LEASE_DURATION_S=str(LEASE_S),
        SIMULATOR_SERVER_DIR=str(tmp_path / "server"),
        **env,
    )
    return worker, port


def bind_slots(tmp_path: Path) -> None:
    """Roles bind A1 and A2: whichever worker takes the lease starts them at once."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "roles.json").write_text(json.dumps([{"boundSlot": s} for s in SLOTS]))
    (config / "accounts.json").write_text(json.dumps([{"slot": s, "enabled": True} for s in SLOTS]))


def log_in(worker: ProgramProcess, port: int) -> None:
    """Scan the QR of the warmed-up slots: CONNECTED, with stored auth."""
    for slot in SLOTS:
        worker.wait_until(shows_qr(port, slot), f"{slot} shows its QR")
        assert call(port, f"/api/accounts/{slot}/scan", "POST")[0] == 200
        worker.wait_until(status_is(port, slot, "CONNECTED"), f"{slot} in")


def events(worker: ProgramProcess) -> list[dict[str, object]]:
    lines = worker.output().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"ts"')]


def saw_lease(worker: ProgramProcess) -> bool:
    """The worker has read the Lease at least once (waiting for it, or holding it)."""
    return any(e["event"] in ("lease_wait", "lease_acquired") for e in events(worker))


def holder(api_client: client.ApiClient, namespace: str) -> str | None:
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    return lease.spec.holder_identity  # type: ignore[no-any-return]


def hold_for(seconds: float, *checks: tuple[Callable[[], bool], str]) -> None:
    """Every check stays true for `seconds` (looked at every 0.2 s)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for check, what in checks:
            assert check(), f"{what} stopped being true"
        time.sleep(0.2)


def one_owner_at_a_time(server_dir: Path) -> dict[str, float]:
    """Per slot, no two owners' open intervals overlap in the server ledger; returns, per
    slot, the gap in seconds between one owner's close and the next owner's open."""
    with sqlite3.connect(server_dir / "simulator-server.sqlite3") as db:
        rows = db.execute(
            "SELECT slot, owner, event, monotonic_ns FROM sessions ORDER BY monotonic_ns"
        ).fetchall()
    intervals: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    opened: dict[tuple[str, str], float] = {}
    for slot, owner, event, at_ns in rows:
        if event == "open":
            opened.setdefault((slot, owner), at_ns / 1e9)
        elif (slot, owner) in opened:
            intervals[slot].append((owner, opened.pop((slot, owner)), at_ns / 1e9))
    for (slot, owner), since in opened.items():
        intervals[slot].append((owner, since, math.inf))
    gaps = {}
    for slot, spans in intervals.items():
        spans.sort(key=lambda span: span[1])
        for a in spans:
            for b in spans:
                if a[0] != b[0]:
                    assert a[2] <= b[1] or b[2] <= a[1], f"{slot} open twice: {a} and {b}"
        handovers = [b[1] - a[2] for a, b in itertools.pairwise(spans) if a[0] != b[0]]
        if handovers:
            gaps[slot] = min(handovers)
    return gaps


def proxied_kubeconfig(cluster: LocalCluster, proxy: FreezableProxy, path: Path) -> Path:
    """The cluster's kubeconfig with the proxy as server (same CA, same token)."""
    kubeconfig = json.loads(cluster.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path.write_text(json.dumps(kubeconfig))
    return path


def apiserver_port(cluster: LocalCluster) -> int:
    state = cluster.state
    assert state is not None
    return state.ports["apiserver"]


def skewed(offset: str | None, cluster: LocalCluster) -> dict[str, str]:
    """Env that gives a process a wall clock `offset` off (libfaketime), monotonic untouched."""
    if offset is None:
        return {}
    lib = libfaketime()
    if lib is None:
        pytest.fail("libfaketime is missing: install the Debian package faketime (.ci/run does)")
    if offset.startswith("-"):  # the apiserver's certificates must be valid at that time
        out = subprocess.run(
            ["openssl", "x509", "-noout", "-startdate", "-in", str(cluster.pki / "ca.crt")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        age_h = (time.time() - ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])) / 3600
        if age_h < 1.1:
            pytest.fail(
                "the cluster's certificates are under an hour old (made before libfaketime "
                "was installed): `make cluster-down` and run again"
            )
    return {"LD_PRELOAD": str(lib), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def test_one_worker_holds_the_lease_the_other_waits_then_takes_over(
    cluster: LocalCluster, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    leases = client.CoordinationV1Api(api_client)
    first, first_port = start(cluster, namespace, "w1-0", tmp_path)
    try:
        first.wait_until(lambda: connect(first_port, "A1")[0] == 200, "first serves")
        second, second_port = start(cluster, namespace, "w1-0-twin", tmp_path)
        try:
            status, reason = connect(second_port, "A2")
            assert status == 503
            assert f"Lease {namespace}/wasp-shard-w1" in reason
            assert ready(first_port) == 200
            assert ready(second_port) == 503
            lease = leases.read_namespaced_lease("wasp-shard-w1", namespace)
            assert lease.spec.holder_identity == "w1-0"

            first.kill()  # stops renewing; the Lease expires after 3 s
            second.wait_until(lambda: connect(second_port, "A2")[0] == 200, "takeover", timeout=30)
            lease = leases.read_namespaced_lease("wasp-shard-w1", namespace)
            assert lease.spec.holder_identity == "w1-0-twin"
            assert lease.spec.lease_transitions == 1
        finally:
            second.stop()
        released = leases.read_namespaced_lease("wasp-shard-w1", namespace)
        assert released.spec.holder_identity is None  # a clean stop gives it back
    finally:
        first.stop()


@pytest.mark.parametrize("clock", [None, "+1h", "-1h"], ids=["clock-ok", "clock+1h", "clock-1h"])
def test_a_frozen_holder_stops_every_session_before_the_standby_starts_one(
    cluster: LocalCluster,
    api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    clock: str | None,
) -> None:
    """The holder's connection to the apiserver hangs (a proxy stops forwarding, keeping
    it open); its wall clock may also be an hour off. The standby leaves it alone while
    it is healthy, takes over once it is not, and never while it still has a session."""
    skew = skewed(clock, cluster)
    bind_slots(tmp_path)
    with FreezableProxy(apiserver_port(cluster)) as proxy:
        kubeconfig = proxied_kubeconfig(cluster, proxy, tmp_path / "holder.kubeconfig")
        first, first_port = start(
            cluster, namespace, "w1-0", tmp_path, KUBECONFIG=str(kubeconfig), **skew
        )
        try:
            first.wait_until(lambda: ready(first_port) == 200, "holder ready")
            log_in(first, first_port)
            if clock is not None:  # the holder's own clock really is off
                offset = float(events(first)[-1]["ts"]) - time.time()  # type: ignore[arg-type]
                assert abs(offset - (3600 if clock == "+1h" else -3600)) < 60
            second, second_port = start(cluster, namespace, "w1-0-twin", tmp_path)
            try:
                second.wait_until(lambda: saw_lease(second), "standby reads the Lease")
                # A healthy holder keeps it, whatever its clock says. (Its own readiness may
                # blink if two renews in a row are slow on a loaded machine: the fence working.)
                hold_for(
                    2 * LEASE_S,
                    (lambda: ready(second_port) == 503, "standby not ready"),
                    (lambda: holder(api_client, namespace) == "w1-0", "w1-0 holds the Lease"),
                )
                proxy.freeze()
                frozen_at = time.monotonic()
                second.wait_until(lambda: ready(second_port) == 200, "takeover", timeout=20)
                took = time.monotonic() - frozen_at
                for slot in SLOTS:  # warm-up opens them on the new owner
                    second.wait_until(status_is(second_port, slot, "CONNECTING"), slot)
                lease_holder = holder(api_client, namespace)
                first_after = ready(first_port), active(first_port)
            finally:
                second.stop()
        finally:
            first.stop()
    gaps = one_owner_at_a_time(tmp_path / "server")  # first: the account's view
    assert set(gaps) == set(SLOTS), gaps
    assert lease_holder == "w1-0-twin"
    assert first_after == (503, 0)  # not ready, no session
    assert "lease_deadline_passed" in [e["event"] for e in events(first)]
    print(f"\n{clock or 'clock ok'}: takeover {took:.2f} s after the freeze; gaps {gaps}")


def test_after_an_apiserver_outage_one_owner_resumes_its_sessions(
    cluster: LocalCluster, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """The apiserver is down for twice the lease duration (etcd keeps the Lease): both
    workers lose it; afterwards exactly one holds it, with its sessions CONNECTED again."""
    bind_slots(tmp_path)
    first, first_port = start(cluster, namespace, "w1-0", tmp_path)
    try:
        first.wait_until(lambda: ready(first_port) == 200, "holder ready")
        log_in(first, first_port)
        second, second_port = start(cluster, namespace, "w1-0-twin", tmp_path)
        try:
            second.wait_until(lambda: saw_lease(second), "standby reads the Lease")
            stopped_at = time.monotonic()
            cluster.stop_apiserver()
            try:
                first.wait_until(lambda: ready(first_port) == 503, "holder past its deadline")
                # /ready turns 503 the moment the deadline passes; the watchdog's stop
                # follows within the margin. The ledger check below is the exact proof.
                first.wait_until(lambda: active(first_port) == 0, "sessions stopped", LEASE_S)
                time.sleep(max(0.0, stopped_at + 2 * LEASE_S - time.monotonic()))
            finally:
                restart_at = time.monotonic()
                cluster.start_apiserver()
            restarted = time.monotonic() - restart_at
            first.wait_until(
                lambda: all(slot_status(first_port, s) == "CONNECTED" for s in SLOTS),
                "sessions resumed",
                timeout=30,
            )
            resumed = time.monotonic() - restart_at
            hold_for(  # and it stays that way: one owner
                LEASE_S + 1,
                (lambda: ready(second_port) == 503, "standby not ready"),
                (lambda: holder(api_client, namespace) == "w1-0", "w1-0 holds the Lease"),
            )
            assert ready(first_port) == 200
        finally:
            second.stop()
    finally:
        first.stop()
    seen = [str(e["event"]) for e in events(first)]
    assert {"lease_deadline_passed", "lease_lost", "sessions_resumed"} <= set(seen)
    assert seen.count("lease_acquired") == 2
    one_owner_at_a_time(tmp_path / "server")
    print(
        f"\noutage: apiserver ready {restarted:.2f} s after its restart; "
        f"sessions CONNECTED again at {resumed:.2f} s"
    )
