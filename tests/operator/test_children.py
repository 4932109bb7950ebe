"""What a shard's children look like: pure functions, no cluster."""

from __future__ import annotations

from typing import Any

from wasp_operator import children
from wasp_operator.config import OperatorConfig

from wasp.shard import WhatsAppShardSpec

CONFIG = OperatorConfig(worker_image="example.org/wasp:1", master_internal_url="http://m:8080")


def spec(**overrides: Any) -> WhatsAppShardSpec:
    return WhatsAppShardSpec.model_validate({"slotFrom": "A1", "slotTo": "A50", **overrides})


def env_of(sts: dict[str, Any]) -> dict[str, Any]:
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_statefulset_runs_one_worker_with_the_spec_environment() -> None:
    sts = children.statefulset("w1", "crm", "uid-1", spec(capacity={"maxActive": 30}), CONFIG)
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "w1"
    env = env_of(sts)
    assert env["SLOT_FROM"] == "A1"
    assert env["SLOT_TO"] == "A50"
    assert env["MAX_ACTIVE"] == "30"
    assert env["MAX_INIT"] == "2"
    assert env["WARMUP_LIMIT"] == "10"
    assert env["WORKDIR"] == "/data"
    assert env["CONFIGDIR"] == "/config"
    assert env["BACKEND"] == "neonize"
    assert env["MASTER_INTERNAL_URL"] == "http://m:8080"
    assert env["MASTER_TOKEN"]["secretKeyRef"]["name"] == "wasp-master"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.org/wasp:1"
    assert container["args"] == ["worker"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"  # holds the lease
    assert container["readinessProbe"]["failureThreshold"] == 1
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


def test_suspend_and_conflict_scale_to_zero() -> None:
    assert (
        children.statefulset("w1", "crm", "u", spec(suspend=True), CONFIG)["spec"]["replicas"] == 0
    )
    assert (
        children.statefulset("w1", "crm", "u", spec(), CONFIG, conflicted=True)["spec"]["replicas"]
        == 0
    )


def test_children_are_owned_and_labelled() -> None:
    for child in (
        children.statefulset("w1", "crm", "uid-1", spec(), CONFIG),
        children.service("w1", "crm", "uid-1", CONFIG),
    ):
        meta = child["metadata"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "wasp.dev/v1alpha1",
                "kind": "WhatsAppShard",
                "name": "w1",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["wasp.dev/shard"] == "w1"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "wasp-operator"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "wasp"


def test_volume_is_claimed_for_data_and_kept_by_default() -> None:
    sts = children.statefulset(
        "w1", "crm", "u", spec(storage={"size": "5Gi", "storageClassName": "fast"}), CONFIG
    )
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/data"} in mounts
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    dropping = children.statefulset(
        "w1", "crm", "u", spec(storage={"retainOnDelete": False}), CONFIG
    )
    assert dropping["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_security_context_is_restricted() -> None:
    pod = children.statefulset("w1", "crm", "u", spec(), CONFIG)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}


def test_pod_overrides_pass_through() -> None:
    sts = children.statefulset(
        "w1",
        "crm",
        "u",
        spec(
            image="other/img:2",
            imagePullPolicy="Always",
            resources={"limits": {"memory": "2Gi"}, "requests": {"cpu": 1}},
            env=[{"name": "LOG_LEVEL", "value": "debug"}],
            nodeSelector={"pool": "wa"},
            tolerations=[{"key": "wa", "operator": "Exists"}],
            affinity={"nodeAffinity": {}},
        ),
        CONFIG,
    )
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "other/img:2"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {"limits": {"memory": "2Gi"}, "requests": {"cpu": 1}}
    assert env_of(sts)["LOG_LEVEL"] == "debug"
    assert pod["nodeSelector"] == {"pool": "wa"}
    assert pod["tolerations"] == [{"key": "wa", "operator": "Exists"}]
    assert pod["affinity"] == {"nodeAffinity": {}}


def test_headless_service_selects_the_worker_pod() -> None:
    svc = children.service("w1", "crm", "u", CONFIG)
    assert svc["spec"]["clusterIP"] == "None"
    pod_labels = children.statefulset("w1", "crm", "u", spec(), CONFIG)["spec"]["template"][
        "metadata"
    ]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
