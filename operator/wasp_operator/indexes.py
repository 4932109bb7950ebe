"""kopf indexes: what every decision needs, kept in memory from the watches.

Shard ranges per namespace (the overlap rule), shards by key, and the
readiness of the StatefulSets the operator owns.
"""

from __future__ import annotations

from typing import Any

from wasp.slots import SlotError, SlotRange
from wasp_operator.conflicts import ShardRef
from wasp_operator.context import Key, ShardView, WorkloadView


def index_ranges(
    namespace: str, name: str, uid: str, meta: Any, spec: Any, **_: Any
) -> dict[str, ShardRef]:
    try:
        slots = SlotRange.parse(spec.get("slotFrom"), spec.get("slotTo"))
    except SlotError:
        return {}
    return {namespace: ShardRef(meta.get("creationTimestamp", ""), name, uid, slots)}


def index_shards(
    namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any, **_: Any
) -> dict[Key, ShardView]:
    return {(namespace, name): ShardView.of(uid, meta, spec, status)}


def index_workloads(namespace: str, name: str, body: Any, **_: Any) -> dict[Key, WorkloadView]:
    spec, status, meta = body.get("spec", {}), body.get("status", {}), body.get("metadata", {})
    replicas = spec.get("replicas", 1)
    rolled_out = (
        status.get("observedGeneration", 0) >= meta.get("generation", 1)
        and status.get("updatedReplicas", 0) == replicas
        and status.get("currentRevision") == status.get("updateRevision")
    )
    return {(namespace, name): WorkloadView(status.get("readyReplicas", 0), rolled_out)}
