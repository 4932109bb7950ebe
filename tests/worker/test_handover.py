"""Nothing accepted is lost, and nothing is delivered twice, when the shard's worker is
replaced: its pod restarts gracefully (SIGTERM: the Lease is released at once) or dies
(SIGKILL: the Lease expires), and the next worker, on the same volume, takes the Lease,
resumes the sessions and drains the queue. A real apiserver holds the Lease; the
simulated WhatsApp server counts what arrived (`tests.support.simulated_server`)."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from pathlib import Path

import pytest
from kubernetes import client
from wasp_worker.backends.simulator import phone_of

from tests.support.cluster import LocalCluster
from tests.support.processes import ProgramProcess, free_port
from tests.support.simulated_server import server_counts
from tests.support.worker import call_worker, start_worker
from tests.worker.test_lease import LEASE_S, bind_slots, holder, log_in
from wasp.slots import Slot

pytestmark = pytest.mark.cluster

MESSAGES = 600


def start(
    cluster: LocalCluster, namespace: str, pod: str, tmp_path: Path
) -> tuple[ProgramProcess, str]:
    """A worker of shard w1 on the shared volume `tmp_path/volume`, as the pod that
    replaces another mounts the same claim."""
    port = free_port()
    worker = start_worker(
        tmp_path / f"{pod}.log",
        port,
        tmp_path / "volume",
        tmp_path / "config",
        base_env=cluster.env(),
        SHARD_NAME="w1",
        POD_NAMESPACE=namespace,
        POD_NAME=pod,
        LEASE_DURATION_S=str(LEASE_S),
        SIMULATOR_SERVER_DIR=str(tmp_path / "server"),
    )
    return worker, f"http://127.0.0.1:{port}"


def queue_states(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "volume" / "queue.sqlite3") as queue:
        return dict(queue.execute("SELECT state, count(*) FROM outbound GROUP BY state"))


def send_all(base: str, count: int) -> list[int]:
    """A client sends A1 -> A2 with one idempotency key per message, 8 at a time."""
    to = phone_of(Slot.parse("A2"))

    def send(i: int) -> int:
        body = {"to": to, "text": f"m{i}", "idempotency_key": f"k{i}"}
        return call_worker("POST", f"{base}/api/accounts/A1/send", body)[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(send, range(count)))


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_replaced_worker_loses_no_accepted_message_and_none_arrives_twice(
    cluster: LocalCluster,
    api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    how: str,
) -> None:
    bind_slots(tmp_path)
    first, first_base = start(cluster, namespace, "w1-0", tmp_path)
    port = int(first_base.rsplit(":", 1)[1])
    try:
        first.wait_until(lambda: call_worker("GET", f"{first_base}/ready")[0] == 200, "holds")
        log_in(first, port)
        accepted = send_all(first_base, MESSAGES // 2)
        assert set(accepted) == {202}
        second, second_base = start(cluster, namespace, "w1-0-new", tmp_path)
        try:
            if how == "sigkill":
                first.kill()
            else:
                first.stop()  # SIGTERM: a rolling restart
            pending = queue_states(tmp_path).get("queued", 0)
            print(f"\n{how}: {pending} of {MESSAGES // 2} accepted still queued")
            assert pending > 0, "the worker must go while the queue drains"
            second.wait_until(
                lambda: call_worker("GET", f"{second_base}/ready")[0] == 200,
                "the new worker holds the Lease",
                timeout=30,
            )
            assert holder(api_client, namespace) == "w1-0-new"
            # The client cannot know what was accepted before: it sends everything again.
            again = send_all(second_base, MESSAGES)
            assert again.count(200) == MESSAGES // 2  # the same message, not a new one
            assert again.count(202) == MESSAGES // 2
            second.wait_until(
                lambda: queue_states(tmp_path) == {"delivered": MESSAGES},
                "all sent, each with its delivered receipt back",
                timeout=120,
            )
        finally:
            second.stop()
    finally:
        first.stop()
    server = server_counts(tmp_path / "server")
    assert len(server.arrivals) == MESSAGES  # none lost
    assert set(server.arrivals.values()) == {1}  # none twice
    print(f"{how}: sends repeated across the handover (deduplicated): {server.repeated_sends}")
    if how == "sigterm":  # a graceful stop lets its sends in flight finish and be recorded
        assert server.repeated_sends == 0
