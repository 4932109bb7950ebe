"""Running the operator for real: admission webhook, two replicas, SIGKILL, metrics."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.operator.test_operator import Cluster, eventually
from tests.support.operator import OperatorProcess
from tests.support.processes import free_port
from wasp.contract import CRD

pytestmark = pytest.mark.cluster


def test_webhook_refuses_an_overlapping_range_naming_the_other_shard(
    k: Cluster, tmp_path: Path
) -> None:
    certs = k.kube.issue_certificate(tmp_path / "certs", "webhook")
    configuration = f"{k.ns[-6:]}.test.wasp.dev"
    operator = OperatorProcess(
        k.kube,
        k.ns,
        tmp_path / "operator.log",
        "--standalone",
        "--webhook-port",
        str(free_port()),
        "--webhook-listen",
        "127.0.0.1",
        "--webhook-host",
        "127.0.0.1",
        "--webhook-cert",
        str(certs / "webhook.crt"),
        "--webhook-key",
        str(certs / "webhook.key"),
        "--webhook-ca",
        str(k.kube.pki / "ca.crt"),
        "--webhook-configuration",
        configuration,
    ).start()
    try:
        eventually(
            lambda: (
                configuration
                in k.kube.kubectl("get", "validatingwebhookconfigurations", "-o", "name")
            ),
            "webhook registered",
        )
        k.apply("w1", {"slotFrom": "A1", "slotTo": "A50"})
        k.phase("w1", "Ready")

        refused = k.kube.run_kubectl(
            "apply", "-f", "-", input=k.manifest("w2", {"slotFrom": "A40", "slotTo": "A90"})
        )
        assert refused.returncode != 0
        assert "denied the request" in refused.stderr
        assert "shard 'w1' already serves A40..A50 (11 slots)" in refused.stderr
        assert "w2" not in k.kube.kubectl("get", "wash", "-n", k.ns, "-o", "name")

        k.apply("w3", {"slotFrom": "A51", "slotTo": "A60"})  # adjacent is fine
        moved = k.kube.run_kubectl(
            "patch",
            "wash",
            "w3",
            "-n",
            k.ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"slotFrom": "A50"}}),
        )
        assert moved.returncode != 0
        assert "shard 'w1' already serves A50..A50 (1 slots)" in moved.stderr
        assert k.shard("w3")["spec"]["slotFrom"] == "A51"
        # Another prefix never overlaps.
        k.apply("b1", {"slotFrom": "B1", "slotTo": "B50"})
    finally:
        operator.stop()
        k.kube.kubectl(
            "delete", "validatingwebhookconfiguration", configuration, "--ignore-not-found"
        )


def test_two_operators_elect_one_and_do_not_fight(k: Cluster, tmp_path: Path) -> None:
    first = OperatorProcess(k.kube, k.ns, tmp_path / "a.log", "--priority", "100").start()
    second = OperatorProcess(k.kube, k.ns, tmp_path / "b.log", "--priority", "50").start()
    try:
        # kopf starts paused and resumes only the highest-priority replica.
        eventually(lambda: "Resuming operations" in first.output(), "first operator active")
        for index in range(5):
            k.apply(
                f"w{index}", {"slotFrom": f"A{index * 10 + 1}", "slotTo": f"A{index * 10 + 10}"}
            )
        for index in range(5):
            k.phase(f"w{index}", "Ready")
        assert k.sts_names() == [f"w{i}" for i in range(5)]
        generations = {name: k.sts(name).metadata.generation for name in k.sts_names()}
        time.sleep(5)  # two fighting writers would bump generations meanwhile
        assert {name: k.sts(name).metadata.generation for name in k.sts_names()} == generations
        assert "Resuming operations" not in second.output()

        first.stop()  # a clean stop leaves the peering: the standby takes over
        eventually(lambda: "Resuming operations" in second.output(), "standby resumes")
        k.apply("w9", {"slotFrom": "A91", "slotTo": "A99"})
        k.phase("w9", "Ready")
    finally:
        first.stop()
        second.stop()
    for process in (first, second):  # kopf's own lines are JSON events like ours
        lines = [json.loads(line) for line in process.output().splitlines() if line.strip()]
        assert lines
        assert all(isinstance(line, dict) and "event" in line for line in lines)
        assert any(str(line.get("message", "")).startswith("Resuming operations") for line in lines)


def test_killed_at_any_point_it_converges_without_duplicates_or_orphans(
    k: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    operator = OperatorProcess(k.kube, k.ns, log, "--standalone").start()
    names = [f"s{i}" for i in range(20)]
    for index, name in enumerate(names):
        k.apply(name, {"slotFrom": f"A{index * 10 + 1}", "slotTo": f"A{index * 10 + 10}"})
    eventually(lambda: len(k.sts_names()) >= 3, "some StatefulSets made")
    operator.kill()  # SIGKILL mid-way

    # While it is down: users delete some shards and change others.
    k.kube.kubectl("delete", "wash", "s0", "s1", "-n", k.ns, "--wait=false")
    k.patch("s2", {"capacity": {"maxActive": 33}})
    k.patch("s3", {"suspend": True})

    operator = OperatorProcess(k.kube, k.ns, log, "--standalone").start()
    try:
        alive = names[2:]
        for name in alive:
            k.phase(name, "Suspended" if name == "s3" else "Ready", timeout=90)
        eventually(lambda: k.sts_names() == sorted(alive), "exactly one StatefulSet per shard")
        shards = {
            s["metadata"]["name"]: s
            for s in k.custom.list_namespaced_custom_object(
                CRD.group, CRD.version, k.ns, CRD.plural
            )["items"]
        }
        for sts in k.apps.list_namespaced_stateful_set(k.ns).items:
            owner = sts.metadata.owner_references[0]
            assert owner.uid == shards[sts.metadata.name]["metadata"]["uid"]  # no orphan
        services = sorted(s.metadata.name for s in k.core.list_namespaced_service(k.ns).items)
        assert services == sorted(alive)
        assert k.env("s2")["MAX_ACTIVE"] == "33"
        assert k.sts("s3").spec.replicas == 0
        for name, shard in shards.items():
            assert shard["status"]["observedGeneration"] == shard["metadata"]["generation"], name
            assert not shard["metadata"].get("finalizers"), "deletes must not wait for us"
    finally:
        operator.stop()


def test_operator_metrics(k: Cluster, tmp_path: Path) -> None:
    operator = OperatorProcess(k.kube, k.ns, tmp_path / "operator.log", "--standalone").start()
    try:
        k.apply("w1", {"slotFrom": "A1", "slotTo": "A50"})
        k.apply("w2", {"slotFrom": "A51", "slotTo": "A60", "suspend": True})
        k.phase("w1", "Ready")
        k.phase("w2", "Suspended")

        def sample(name: str, labels: str = "") -> float:
            pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
            found = re.search(pattern, operator.metrics(), re.MULTILINE)
            return float(found.group(1)) if found else -1.0

        eventually(
            lambda: sample("wasp_operator_shards", '{phase="Ready"}') == 1.0, "Ready shards gauge"
        )
        assert sample("wasp_operator_shards", '{phase="Suspended"}') == 1.0
        assert sample("wasp_operator_shards", '{phase="Conflict"}') == 0.0
        assert sample("wasp_operator_reconciles_total", '{result="ok"}') >= 2
        assert sample("wasp_operator_reconcile_errors_total") == 0.0
        assert sample("wasp_operator_reconcile_duration_seconds_count") >= 2
    finally:
        operator.stop()
