"""One owner per shard in Kubernetes: workers hold a coordination.k8s.io Lease (real apiserver)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.cluster import LocalCluster
from tests.support.processes import ProgramProcess, free_port
from tests.support.worker import start_worker

pytestmark = pytest.mark.cluster


def connect(port: int, slot: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/accounts/{slot}/connect", data=b"{}", method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as error:
        return int(error.code), str(json.loads(error.read())["error"])


def start(
    cluster: LocalCluster, namespace: str, pod: str, tmp_path: Path
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
        LEASE_DURATION_S="3",
    )
    return worker, port


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
