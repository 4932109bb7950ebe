"""The operator against the real control plane: children, status, updates, deletes, conflicts."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import LocalCluster
from tests.support.operator import OperatorProcess
from tests.support.processes import free_port
from tests.support.worker import CREDENTIAL, start_worker
from wasp.contract import CRD, worker_endpoint

pytestmark = pytest.mark.cluster


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as error:
            if error.status != 404:
                raise
            last = None
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


class Cluster:
    """Reads through the Python client, writes through kubectl, as users do."""

    def __init__(self, kube: LocalCluster, api: client.ApiClient, namespace: str) -> None:
        self.kube = kube
        self.ns = namespace
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def manifest(self, name: str, spec: dict[str, Any]) -> str:
        return json.dumps(
            {
                "apiVersion": CRD.api_version,
                "kind": CRD.kind,
                "metadata": {"name": name, "namespace": self.ns},
                "spec": spec,
            }
        )

    def apply(self, name: str, spec: dict[str, Any]) -> None:
        self.kube.kubectl("apply", "-f", "-", input=self.manifest(name, spec))

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.kube.kubectl(
            "patch", "wash", name, "-n", self.ns, "--type=merge", "-p", json.dumps({"spec": spec})
        )

    def shard(self, name: str) -> dict[str, Any]:
        shard: dict[str, Any] = self.custom.get_namespaced_custom_object(
            CRD.group, CRD.version, self.ns, CRD.plural, name
        )
        return shard

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.shard(name).get("status") or {})

    def sts(self, name: str) -> Any:
        return self.apps.read_namespaced_stateful_set(name, self.ns)

    def sts_names(self) -> list[str]:
        return sorted(
            s.metadata.name for s in self.apps.list_namespaced_stateful_set(self.ns).items
        )

    def gone(self, read: Callable[[], Any]) -> bool:
        try:
            read()
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    def phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        found: dict[str, Any] = eventually(
            lambda: (s := self.status(name)).get("phase") == phase and s,
            f"{name} phase {phase}",
            timeout,
        )
        return found

    def env(self, name: str) -> dict[str, str]:
        container = self.sts(name).spec.template.spec.containers[0]
        return {e.name: e.value for e in container.env if e.value is not None}


@pytest.fixture
def operator(k: Cluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(k.kube, k.ns, tmp_path / "operator.log", "--standalone").start()
    yield process
    process.stop()


def test_shard_gets_service_statefulset_and_a_ready_status(k: Cluster, tmp_path: Path) -> None:
    # kwok runs no containers: a real `wasp worker` on loopback plays the pod's /health.
    port = free_port()
    worker = start_worker(
        tmp_path / "worker.log", port, tmp_path / "data", tmp_path / "config", MAX_ACTIVE="20"
    )
    operator = OperatorProcess(
        k.kube,
        k.ns,
        tmp_path / "operator.log",
        "--standalone",
        health_url_template=f"http://127.0.0.1:{port}",
    ).start()
    try:
        for slot in ("A1", "A2", "A3"):
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/accounts/{slot}/connect",
                    method="POST",
                    headers=CREDENTIAL,  # as the master calls it; the operator needs only /health
                ),
                timeout=5,
            )
        check_shard_becomes_ready(k)
    finally:
        operator.stop()
        worker.stop()


def check_shard_becomes_ready(k: Cluster) -> None:
    k.apply("w1", {"slotFrom": "A1", "slotTo": "A50", "backend": "simulator"})

    sts = eventually(lambda: k.sts("w1"), "StatefulSet w1")
    assert sts.spec.replicas == 1
    assert sts.metadata.owner_references[0].kind == CRD.kind
    assert k.env("w1")["SLOT_FROM"] == "A1"
    assert k.env("w1")["BACKEND"] == "simulator"
    service = k.core.read_namespaced_service("w1", k.ns)
    assert service.spec.cluster_ip == "None"

    k.kube.kubectl("wait", "--for=condition=Ready", "wash/w1", "-n", k.ns, "--timeout=60s")
    status = eventually(
        lambda: (s := k.status("w1")).get("active") == 3 and s, "active from /health"
    )
    assert status["phase"] == "Ready"
    assert status["readyReplicas"] == 1
    assert status["observedGeneration"] == k.shard("w1")["metadata"]["generation"]
    assert status["endpoint"] == worker_endpoint("w1", k.ns)
    assert status["maxActive"] == 20
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {"Ready": "True", "Progressing": "False", "SlotConflict": "False"}
    row = k.kube.kubectl("get", "wash", "w1", "-n", k.ns, "--no-headers").split()
    assert row[1:6] == ["A1", "A50", "3", "20", "Ready"]
    claim = k.core.read_namespaced_persistent_volume_claim("data-w1-0", k.ns)
    assert claim.status.phase == "Bound"


def test_spec_changes_update_children_in_place(k: Cluster, operator: OperatorProcess) -> None:
    k.apply("w1", {"slotFrom": "A1", "slotTo": "A50"})
    k.phase("w1", "Ready")
    sts_uid = k.sts("w1").metadata.uid
    service_uid = k.core.read_namespaced_service("w1", k.ns).metadata.uid

    k.patch(
        "w1",
        {
            "capacity": {"maxActive": 30, "maxInit": 3},
            "env": [{"name": "LOG_LEVEL", "value": "debug"}],
        },
    )
    eventually(lambda: k.env("w1").get("MAX_ACTIVE") == "30", "MAX_ACTIVE updated")
    assert k.env("w1")["MAX_INIT"] == "3"
    assert k.env("w1")["LOG_LEVEL"] == "debug"
    assert k.sts("w1").metadata.uid == sts_uid
    assert k.core.read_namespaced_service("w1", k.ns).metadata.uid == service_uid
    generation = k.shard("w1")["metadata"]["generation"]
    eventually(
        lambda: k.status("w1").get("observedGeneration") == generation, "observedGeneration follows"
    )

    k.patch("w1", {"suspend": True})
    k.phase("w1", "Suspended")
    assert k.sts("w1").spec.replicas == 0
    eventually(lambda: not k.core.list_namespaced_pod(k.ns).items, "pod stopped")
    k.patch("w1", {"suspend": False})
    k.phase("w1", "Ready")
    assert k.sts("w1").spec.replicas == 1


def test_growing_the_volume_recreates_the_statefulset_and_keeps_the_claim(
    k: Cluster, operator: OperatorProcess
) -> None:
    k.apply("w1", {"slotFrom": "A1", "slotTo": "A50"})
    k.phase("w1", "Ready")
    old_uid = k.sts("w1").metadata.uid
    claim_uid = k.core.read_namespaced_persistent_volume_claim("data-w1-0", k.ns).metadata.uid

    k.patch("w1", {"storage": {"size": "2Gi"}})
    sts = eventually(lambda: (s := k.sts("w1")).metadata.uid != old_uid and s, "recreated")
    template = sts.spec.volume_claim_templates[0]
    assert template.spec.resources.requests["storage"] == "2Gi"
    claim = k.core.read_namespaced_persistent_volume_claim("data-w1-0", k.ns)
    assert claim.metadata.uid == claim_uid
    assert claim.spec.resources.requests["storage"] == "2Gi"
    k.phase("w1", "Ready")


def test_deleting_a_shard_keeps_its_volume_unless_asked(
    k: Cluster, operator: OperatorProcess
) -> None:
    k.apply("keep", {"slotFrom": "A1", "slotTo": "A50"})
    k.apply("drop", {"slotFrom": "A51", "slotTo": "A100", "storage": {"retainOnDelete": False}})
    k.phase("keep", "Ready")
    k.phase("drop", "Ready")

    k.kube.kubectl("delete", "wash", "keep", "drop", "-n", k.ns, "--wait=true")
    eventually(lambda: k.sts_names() == [], "StatefulSets garbage-collected")
    eventually(
        lambda: k.gone(lambda: k.core.read_namespaced_service("keep", k.ns)),
        "Service garbage-collected",
    )
    eventually(
        lambda: k.gone(lambda: k.core.read_namespaced_persistent_volume_claim("data-drop-0", k.ns)),
        "claim of drop deleted",
    )
    claim = k.core.read_namespaced_persistent_volume_claim("data-keep-0", k.ns)
    assert claim.metadata.deletion_timestamp is None


def test_overlap_that_slips_past_admission_is_a_conflict(
    k: Cluster, operator: OperatorProcess
) -> None:
    k.apply("w1", {"slotFrom": "A1", "slotTo": "A50"})
    k.phase("w1", "Ready")
    before = k.sts("w1")

    k.apply("w2", {"slotFrom": "A40", "slotTo": "A90"})  # no webhook in this test
    status = k.phase("w2", "Conflict")
    conflict = next(c for c in status["conditions"] if c["type"] == "SlotConflict")
    assert conflict["status"] == "True"
    assert "'w1'" in conflict["message"]
    assert "A40..A50" in conflict["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    time.sleep(3)  # give a wrong operator time to create something
    assert k.sts_names() == ["w1"]
    assert k.gone(lambda: k.core.read_namespaced_service("w2", k.ns))
    after = k.sts("w1")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert k.status("w1")["phase"] == "Ready"

    k.kube.kubectl("delete", "wash", "w1", "-n", k.ns)
    k.phase("w2", "Ready", timeout=90)
    assert k.sts_names() == ["w2"]
