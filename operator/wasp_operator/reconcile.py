"""Reconcile: make a shard's Service and StatefulSet match its spec, then report status.

A shard that loses an overlap gets no children (and its StatefulSet, if it had
one, is scaled away); the older shard keeps the range.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from wasp.shard import WhatsAppShardSpec
from wasp_operator import children
from wasp_operator.conflicts import Conflict, ShardRef, losing_conflict
from wasp_operator.context import Context, Key, ShardView, WorkloadView, first, parse_spec
from wasp_operator.publish import publish_status

log = logging.getLogger("wasp.operator")


async def reconcile(
    name: str,
    namespace: str,
    uid: str,
    meta: Any,
    spec: Any,
    status: Any,
    memo: Context,
    shard_ranges: kopf.Index[str, ShardRef],
    workloads: kopf.Index[Key, WorkloadView],
    **_: Any,
) -> None:
    """kopf handler (create, update of spec, resume): see `reconcile_shard`."""
    view = ShardView.of(uid, meta, spec, status)
    await reconcile_shard(memo, (namespace, name), view, shard_ranges, workloads)


async def reconcile_shard(
    ctx: Context,
    key: Key,
    view: ShardView,
    shard_ranges: kopf.Index[str, ShardRef],
    workloads: kopf.Index[Key, WorkloadView],
) -> None:
    """Make the shard's Service and StatefulSet match its spec, then report status."""
    namespace, name = key
    started = time.perf_counter()
    result = "error"
    try:
        spec = parse_spec(view.spec)
        own = ShardRef(view.created, name, view.uid, spec.slots)
        conflict = losing_conflict(own, shard_ranges.get(namespace, []))
        await _apply_children(ctx, key, view.uid, spec, conflict)
        ctx.reconciled[key] = spec
        if conflict is not None:
            log.warning(f"shard_conflict {namespace}/{name}: {conflict.message()}")
        await publish_status(
            ctx, key, spec, view.generation, view.status, conflict, first(workloads.get(key))
        )
        result = "conflict" if conflict else "ok"
    finally:
        ctx.metrics.reconciled(result, time.perf_counter() - started)


async def _apply_children(
    ctx: Context, key: Key, uid: str, spec: WhatsAppShardSpec, conflict: Conflict | None
) -> None:
    namespace, name = key
    config, kube = ctx.config, ctx.kube
    if conflict is not None:
        # Create nothing; if this shard had pods before the overlap, stop them.
        existing = await asyncio.to_thread(kube.read_statefulset, name, namespace)
        if existing is None or not _owned_by(existing, uid):
            return
    else:
        await asyncio.to_thread(kube.apply_service, children.service(name, namespace, uid, config))
    manifest = children.statefulset(
        name, namespace, uid, spec, config, conflicted=conflict is not None
    )
    await asyncio.to_thread(kube.apply_statefulset, manifest)


def _owned_by(statefulset: Any, uid: str) -> bool:
    return any(ref.uid == uid for ref in statefulset.metadata.owner_references or [])
