"""The WhatsAppShard CRD: generated from the pydantic models, enforced by the apiserver."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.support.cluster import LocalCluster
from tests.test_contract import EDGES, oracle, shards_file_accepts
from wasp import crd
from wasp.contract import CRD
from wasp.shard import WhatsAppShardSpec


def test_committed_crd_files_are_the_generated_ones_and_identical() -> None:
    top, chart = crd.CRD_FILES
    assert top.read_text() == crd.render(), "run `python -m wasp.crd --write`"
    assert chart.read_bytes() == top.read_bytes()
    peering = top.parent / "kopf-peerings.yaml"
    assert (chart.parent / "kopf-peerings.yaml").read_bytes() == peering.read_bytes()


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every field (property) below `schema`, list items' fields included."""
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        for name, sub in items.get("properties", {}).items():
            found += _walk(sub, f"{path}[].{name}")
    return found


def test_every_spec_and_status_field_has_a_description() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in _walk(schema["properties"][part], part):
            assert node.get("description"), f"{path} has no description"


def test_every_model_field_is_in_the_schema_with_its_default() -> None:
    spec_schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    for name, field in WhatsAppShardSpec.model_fields.items():
        assert name in spec_schema["properties"], name
        if field.is_required():
            assert name in spec_schema["required"]
    defaults = WhatsAppShardSpec.model_validate({"slotFrom": "A1", "slotTo": "A2"})
    capacity = spec_schema["properties"]["capacity"]["properties"]
    assert capacity["maxActive"]["default"] == defaults.capacity.maxActive
    assert spec_schema["properties"]["backend"]["default"] == defaults.backend


GOOD = {"slotFrom": "A1", "slotTo": "A50"}

# (name, spec, what the apiserver's message must say)
BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("lower-case-slot", {"slotFrom": "a1", "slotTo": "A50"}, "spec.slotFrom"),
    ("slot-zero", {"slotFrom": "A0", "slotTo": "A50"}, "spec.slotFrom"),
    ("negative-slot", {"slotFrom": "A-1", "slotTo": "A50"}, "spec.slotFrom"),
    ("fraction-slot", {"slotFrom": "A1.5", "slotTo": "A50"}, "spec.slotFrom"),
    ("path-slot", {"slotFrom": "../A1", "slotTo": "A50"}, "spec.slotFrom"),
    ("huge-slot", {"slotFrom": "A" * 2048, "slotTo": "A50"}, "spec.slotFrom"),
    ("different-prefixes", {"slotFrom": "A1", "slotTo": "B50"}, "must share one prefix"),
    ("from-after-to", {"slotFrom": "A50", "slotTo": "A1"}, "must not come after slotTo"),
    ("missing-slot-to", {"slotFrom": "A1"}, "spec.slotTo: Required value"),
    ("negative-capacity", {**GOOD, "capacity": {"maxActive": -1}}, "spec.capacity.maxActive"),
    ("zero-capacity", {**GOOD, "capacity": {"maxActive": 0}}, "spec.capacity.maxActive"),
    ("absurd-capacity", {**GOOD, "capacity": {"maxActive": 10**6}}, "spec.capacity.maxActive"),
    (
        "init-above-active",
        {**GOOD, "capacity": {"maxActive": 2, "maxInit": 3}},
        "maxInit must not exceed maxActive",
    ),
    (
        "warmup-above-active",
        {**GOOD, "capacity": {"maxActive": 2, "warmupLimit": 3}},
        "warmupLimit must not exceed maxActive",
    ),
    ("unknown-backend", {**GOOD, "backend": "baileys"}, "spec.backend"),
    ("absurd-storage", {**GOOD, "storage": {"size": "900Pi"}}, "between 64Mi and 16Ti"),
    ("tiny-storage", {**GOOD, "storage": {"size": "1Ki"}}, "between 64Mi and 16Ti"),
    ("not-a-quantity", {**GOOD, "storage": {"size": "lots"}}, "between 64Mi and 16Ti"),
    ("string-capacity", {**GOOD, "capacity": {"maxActive": "many"}}, "spec.capacity.maxActive"),
    (
        "reserved-env",
        {**GOOD, "env": [{"name": "SLOT_FROM", "value": "A1"}]},
        "may not set a variable the operator owns",
    ),
    ("bad-pull-policy", {**GOOD, "imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    (
        "zero-pace",
        {**GOOD, "pacing": {"session": {"perMinute": 0, "burst": 1}}},
        "spec.pacing.session.perMinute",
    ),
    (
        "absurd-burst",
        {**GOOD, "pacing": {"recipient": {"perMinute": 6, "burst": 10**6}}},
        "spec.pacing.recipient.burst",
    ),
    ("jitter-above-one", {**GOOD, "pacing": {"jitter": 2}}, "spec.pacing.jitter"),
    (
        "pace-without-burst",
        {**GOOD, "pacing": {"session": {"perMinute": 20}}},
        "spec.pacing.session.burst: Required value",
    ),
    ("zero-retention-age", {**GOOD, "retention": {"maxAgeDays": 0}}, "spec.retention.maxAgeDays"),
    (
        "absurd-retention-count",
        {**GOOD, "retention": {"maxMessagesPerChat": 10**9}},
        "spec.retention.maxMessagesPerChat",
    ),
    (
        "string-retention",
        {**GOOD, "retention": {"maxAgeDays": "30d"}},
        "spec.retention.maxAgeDays",
    ),
    (
        "zero-sync-horizon",
        {**GOOD, "retention": {"syncHorizonDays": 0}},
        "spec.retention.syncHorizonDays",
    ),
    (
        "sync-horizon-set-in-env",
        {**GOOD, "env": [{"name": "RETENTION_SYNC_HORIZON_DAYS", "value": "1"}]},
        "may not set a variable the operator owns",
    ),
    (
        "retention-set-in-env",
        {**GOOD, "env": [{"name": "RETENTION_MAX_AGE_DAYS", "value": "1"}]},
        "may not set a variable the operator owns",
    ),
    (
        "pace-set-in-env",
        {**GOOD, "env": [{"name": "PACING_SESSION_BURST", "value": "500"}]},
        "may not set a variable the operator owns",
    ),
]


def _shard(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": CRD.api_version,
            "kind": CRD.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


@pytest.mark.cluster
@pytest.mark.parametrize(("name", "spec", "reason"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_apiserver_refuses_bad_spec_with_a_clear_message(
    wasp_crds: LocalCluster, namespace: str, name: str, spec: dict[str, Any], reason: str
) -> None:
    result = wasp_crds.run_kubectl("apply", "-f", "-", input=_shard(name, namespace, spec))
    assert result.returncode != 0, f"{name} was accepted"
    assert "is invalid" in result.stderr, result.stderr
    assert reason in result.stderr, result.stderr
    listed = wasp_crds.kubectl("get", CRD.plural, "-n", namespace, "-o", "name")
    assert listed.strip() == ""  # refused means nothing was stored


@pytest.mark.cluster
def test_bad_name_is_refused(wasp_crds: LocalCluster, namespace: str) -> None:
    result = wasp_crds.run_kubectl("apply", "-f", "-", input=_shard("x" * 60, namespace, GOOD))
    assert result.returncode != 0
    assert "name must be a DNS label of at most 52 characters" in result.stderr


@pytest.mark.cluster
@pytest.mark.parametrize("name", EDGES)
def test_apiserver_and_shards_file_judge_a_shard_name_alike(
    wasp_crds: LocalCluster, namespace: str, name: str
) -> None:
    result = wasp_crds.run_kubectl(
        "apply", "--dry-run=server", "-f", "-", input=_shard(name, namespace, GOOD)
    )
    assert (result.returncode == 0) == shards_file_accepts(name) == oracle(name), result.stderr


@pytest.mark.cluster
def test_pydantic_and_apiserver_agree_on_every_case(
    wasp_crds: LocalCluster, namespace: str
) -> None:
    cases = [spec for _, spec, _ in BAD_SPECS] + [
        GOOD,
        {"slotFrom": "ZZ7", "slotTo": "ZZ7"},
        {"slotFrom": "B1", "slotTo": "B350", "capacity": {"maxActive": 5000, "maxInit": 5000}},
        {**GOOD, "storage": {"size": "64Mi"}},
        {**GOOD, "storage": {"size": "16Ti", "retainOnDelete": False}},
        {**GOOD, "env": [{"name": "LOG_LEVEL", "value": "debug"}], "suspend": True},
        {**GOOD, "resources": {"requests": {"cpu": 1, "memory": "1Gi"}}},
    ]
    for index, spec in enumerate(cases):
        try:
            WhatsAppShardSpec.model_validate(spec)
            python_ok = True
        except ValidationError:
            python_ok = False
        result = wasp_crds.run_kubectl(
            "apply", "--dry-run=server", "-f", "-", input=_shard(f"case{index}", namespace, spec)
        )
        assert (result.returncode == 0) == python_ok, (spec, result.stderr)


@pytest.mark.cluster
def test_defaults_printer_columns_and_explain(wasp_crds: LocalCluster, namespace: str) -> None:
    wasp_crds.kubectl("apply", "-f", "-", input=_shard("w1", namespace, GOOD))
    stored = json.loads(wasp_crds.kubectl("get", "wash", "w1", "-n", namespace, "-o", "json"))
    assert stored["spec"]["capacity"] == {"maxActive": 20, "maxInit": 2, "warmupLimit": 10}
    assert stored["spec"]["storage"] == {"size": "1Gi", "retainOnDelete": True}
    assert stored["spec"]["backend"] == "neonize"
    assert stored["spec"]["suspend"] is False
    header = wasp_crds.kubectl("get", "wasp", "-n", namespace).splitlines()[0].split()
    assert header == ["NAME", "FROM", "TO", "ACTIVE", "MAX", "PHASE", "AGE"]
    explained = wasp_crds.kubectl("explain", "whatsappshard.spec.capacity")
    assert "Session limits of the shard's worker." in explained
    assert "maxInit" in explained
    assert "Most sessions initialising at the same time" in explained
    as_yaml = yaml.safe_load(wasp_crds.kubectl("get", "crd", CRD.crd_name, "-o", "yaml"))
    assert as_yaml["spec"]["names"]["shortNames"] == ["wash"]
    assert as_yaml["spec"]["names"]["categories"] == ["wasp"]
    assert as_yaml["spec"]["versions"][0]["subresources"] == {"status": {}}
