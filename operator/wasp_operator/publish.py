"""Writing a shard's status: one writer per shard, and never an older view after a newer one.

Both the reconcile and the refresh between reconciles publish through here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wasp.shard import WhatsAppShardSpec
from wasp_operator.conflicts import Conflict
from wasp_operator.context import Context, Key, WorkloadView, now
from wasp_operator.status import Observed, shard_status


async def publish_status(
    ctx: Context,
    key: Key,
    spec: WhatsAppShardSpec,
    generation: int | None,
    previous: dict[str, Any],
    conflict: Conflict | None,
    workload: WorkloadView | None,
) -> str:
    """Write the shard's status if it changed; return its phase.

    `generation` is the spec generation just reconciled, or None for a refresh
    between reconciles. What this process last wrote wins over `previous` (which
    may come from a stale index), so a refresh never turns observedGeneration back.
    """
    # One writer per shard at a time: a refresh racing a reconcile must not land
    # its older view after the reconcile's newer one.
    async with ctx.locks.setdefault(key, asyncio.Lock()):
        namespace, name = key
        before = ctx.published.get(key, previous)
        if generation is None:
            generation = before.get("observedGeneration")
            if generation is None:
                return str(before.get("phase", "Pending"))  # not reconciled yet
        health = ctx.health.get(key)
        seen = Observed(
            generation=generation,
            statefulset_found=workload is not None,
            ready_replicas=workload.ready_replicas if workload else 0,
            rolled_out=workload.rolled_out if workload else False,
            active=health.active if health else None,
            max_active=health.max_active if health else None,
            conflict=conflict,
        )
        status = shard_status(name, spec, seen, before, ctx.config.endpoint(name, namespace), now())
        if status != {k: before.get(k) for k in status}:
            await asyncio.to_thread(ctx.kube.patch_shard_status, name, namespace, status)
        ctx.published[key] = status
        return str(status["phase"])
