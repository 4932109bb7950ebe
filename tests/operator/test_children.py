"""What a shard's children look like: pure functions, no cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from wasp_operator import children
from wasp_operator.config import OperatorConfig
from wasp_worker.config import WorkerConfig

from wasp.contract import CRD, RESERVED_ENV, WORKER_METRICS_PORT, WORKER_PORT
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
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.org/wasp:1"
    assert container["args"] == ["worker"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"  # holds the lease
    assert container["readinessProbe"]["failureThreshold"] == 1
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


def _kubelet_env(sts: dict[str, Any], namespace: str, secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet resolves it for the StatefulSet's pod."""
    pod = f"{sts['metadata']['name']}-0"
    fields = {"metadata.namespace": namespace, "metadata.name": pod}
    env: dict[str, str] = {}
    for var in sts["spec"]["template"]["spec"]["containers"][0]["env"]:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = var["value"]
        elif "fieldRef" in source:
            env[var["name"]] = fields[source["fieldRef"]["fieldPath"]]
        else:
            ref = source["secretKeyRef"]
            env[var["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
    return env


def _mount(sts: dict[str, Any], volume: str) -> Path:
    mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    return Path(next(m["mountPath"] for m in mounts if m["name"] == volume))


@st.composite
def _cases(draw: st.DrawFn) -> dict[str, Any]:
    """A shard spec's inputs, the operator's settings and where the shard lives."""
    max_active = draw(st.integers(1, 5000))
    return {
        "prefix": draw(st.sampled_from(["A", "B", "ZZ"])),
        "first": draw(st.integers(1, 10_000)),
        "length": draw(st.integers(0, 500)),
        "maxActive": max_active,
        "maxInit": draw(st.integers(1, max_active)),
        "warmupLimit": draw(st.integers(0, max_active)),
        "backend": draw(st.sampled_from(["neonize", "simulator"])),
        "name": draw(st.from_regex(r"\A[a-z][-a-z0-9]{0,50}[a-z0-9]\Z")),
        "namespace": draw(st.sampled_from(["crm", "default", "wasp-prod"])),
        "port": draw(st.integers(1, 65535)),
        "url": draw(st.sampled_from(["", "http://wasp-master.crm.svc:8080"])),
        "pacing": {
            "session": {
                "perMinute": draw(st.integers(1, 60_000)),
                "burst": draw(st.integers(1, 50)),
            },
            "recipient": {"perMinute": draw(st.integers(1, 600)), "burst": draw(st.integers(1, 9))},
            "jitter": draw(st.floats(0, 1)),
        },
        "retention": {
            key: value
            for key, value in (
                ("maxAgeDays", draw(st.none() | st.integers(1, 36_500))),
                ("maxMessagesPerChat", draw(st.none() | st.integers(1, 10_000_000))),
                ("syncHorizonDays", draw(st.none() | st.integers(1, 36_500))),
            )
            if value is not None
        },
    }


@settings(max_examples=60, deadline=None)
@given(_cases())
def test_rendered_env_is_read_back_by_the_worker_field_by_field(case: dict[str, Any]) -> None:
    shard = spec(
        slotFrom=f"{case['prefix']}{case['first']}",
        slotTo=f"{case['prefix']}{case['first'] + case['length']}",
        capacity={k: case[k] for k in ("maxActive", "maxInit", "warmupLimit")},
        backend=case["backend"],
        pacing=case["pacing"],
        retention=case["retention"],
    )
    config = OperatorConfig(
        master_internal_url=case["url"],
        worker_port=case["port"],
        master_token_secret="tok",
        worker_tokens_secret="tok",
    )
    name, namespace = case["name"], case["namespace"]
    sts = children.statefulset(name, namespace, "u", shard, config)
    tokens = "new-token-0123456789,old-token-0123456789"
    rendered = _kubelet_env(
        sts, namespace, {"tok/master-token": "s3cr3t", "tok/worker-tokens": tokens}
    )
    # Every variable the operator sets is one the worker reads (a misspelt name would be
    # ignored and the worker's default used), and it sets exactly the reserved ones.
    worker_vars = {n: v for n, v in rendered.items() if n != "PYTHONDONTWRITEBYTECODE"}
    assert set(worker_vars) <= set(WorkerConfig.env_names())
    # An unset retention is no variable (the worker keeps everything).
    unset = {
        WorkerConfig.env_name(field)
        for field, key in (
            ("retention_max_age_days", "maxAgeDays"),
            ("retention_max_messages_per_chat", "maxMessagesPerChat"),
        )
        if key not in case["retention"]
    }
    assert tuple(worker_vars) == tuple(n for n in RESERVED_ENV if n not in unset)
    with mock.patch.dict(os.environ, clear=False):
        for var in WorkerConfig.env_names():
            os.environ.pop(var, None)
        os.environ.update(rendered)
        worker = WorkerConfig()  # the worker's own loader (pydantic-settings)
    expected = {
        "shard_name": name,
        "pod_namespace": namespace,
        "pod_name": f"{name}-0",
        "port": case["port"],
        "slot_from": shard.slotFrom,
        "slot_to": shard.slotTo,
        "max_active": shard.capacity.maxActive,
        "max_init": shard.capacity.maxInit,
        "warmup_limit": shard.capacity.warmupLimit,
        "config_dir": _mount(sts, "config"),
        "work_dir": _mount(sts, children.DATA_VOLUME),
        "backend": shard.backend,
        "master_internal_url": case["url"],
        "master_token": "s3cr3t",
        "worker_tokens": tokens,
        "insecure": False,
        "pacing_session_per_minute": shard.pacing.session.perMinute,
        "pacing_session_burst": shard.pacing.session.burst,
        "pacing_recipient_per_minute": shard.pacing.recipient.perMinute,
        "pacing_recipient_burst": shard.pacing.recipient.burst,
        "pacing_jitter": shard.pacing.jitter,
        "retention_max_age_days": shard.retention.maxAgeDays,
        "retention_max_messages_per_chat": shard.retention.maxMessagesPerChat,
        "retention_sync_horizon_days": shard.retention.syncHorizonDays,
    }
    defaults = WorkerConfig.model_construct()
    for field in WorkerConfig.model_fields:
        want = expected[field] if field in expected else getattr(defaults, field)
        assert getattr(worker, field) == want, field
    assert sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == (
        worker.port
    )
    assert worker.shard_pacing() == shard.pacing
    assert worker.shard_retention() == shard.retention


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
                "apiVersion": CRD.api_version,
                "kind": CRD.kind,
                "name": "w1",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][f"{CRD.group}/shard"] == "w1"
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


def test_worker_tokens_come_from_the_secret_and_metrics_have_their_port() -> None:
    config = OperatorConfig(worker_tokens_secret="wasp-credentials")
    sts = children.statefulset("w1", "crm", "uid-1", spec(), config)
    env = env_of(sts)
    # The tokens are referenced, never written into the StatefulSet, and required.
    assert env["WORKER_TOKENS"] == {
        "secretKeyRef": {"name": "wasp-credentials", "key": "worker-tokens"}
    }
    assert env["WORKER_INSECURE"] == "false"
    assert env["METRICS_PORT"] == str(WORKER_METRICS_PORT)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": WORKER_PORT,
        "metrics": WORKER_METRICS_PORT,
    }
    # The probes stay on the API port: the worker answers them without a token.
    assert container["readinessProbe"]["httpGet"]["port"] == "http"


def test_webhook_signing_secrets_are_mounted_into_workers_when_configured() -> None:
    plain = children.statefulset("w1", "crm", "uid-1", spec(), CONFIG)
    assert "WEBHOOK_SECRETS_FILE" not in env_of(plain)
    config = OperatorConfig(webhook_signing_secret="rel-webhook-secrets")
    pod = children.statefulset("w1", "crm", "uid-1", spec(), config)["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-secrets"]["secret"] == {
        "secretName": "rel-webhook-secrets",
        "optional": True,  # a worker without it delivers nothing, and still serves
    }
    mount = mounts["webhook-secrets"]
    assert mount["readOnly"] is True
    # What the worker reads is inside the mounted directory (a directory sees updates).
    file = env_of({"spec": {"template": {"spec": pod}}})["WEBHOOK_SECRETS_FILE"]
    assert Path(file).parent == Path(mount["mountPath"])
    assert WorkerConfig.model_validate(
        {"slot_from": "A1", "slot_to": "A2", "webhook_secrets_file": file}
    ).webhook_secrets_file == Path(file)
