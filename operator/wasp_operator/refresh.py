"""Status between reconciles: a StatefulSet event refreshes its shard at once, and one
operator-wide loop reads the workers' /health and re-checks overlaps.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from wasp.shard import WhatsAppShardSpec
from wasp_operator.conflicts import ShardRef, losing_conflict
from wasp_operator.context import Context, Health, Key, ShardView, WorkloadView, first
from wasp_operator.publish import publish_status
from wasp_operator.reconcile import reconcile_shard

HEALTH_CONCURRENCY = 32
log = logging.getLogger("wasp.operator")


async def workload_changed(
    namespace: str,
    name: str,
    event: Any,
    memo: Context,
    shard_views: kopf.Index[Key, ShardView],
    workloads: kopf.Index[Key, WorkloadView],
    shard_ranges: kopf.Index[str, ShardRef],
    **_: Any,
) -> None:
    """A shard's StatefulSet changed (a pod became ready or went away): refresh status."""
    if event.get("type") == "DELETED":
        return
    view: ShardView | None = first(shard_views.get((namespace, name)))
    if view is not None:
        await refresh_shard(memo, (namespace, name), view, workloads, shard_ranges, poll=False)


async def refresh_shard(
    ctx: Context,
    key: Key,
    view: ShardView,
    workloads: kopf.Index[Key, WorkloadView],
    shard_ranges: kopf.Index[str, ShardRef],
    *,
    poll: bool,
) -> None:
    """Status between reconciles; reconcile again if the overlap verdict changed."""
    namespace, name = key
    try:
        spec = WhatsAppShardSpec.model_validate(view.spec)
    except ValidationError:
        return
    workload: WorkloadView | None = first(workloads.get(key))
    if poll and workload is not None and workload.ready_replicas > 0:
        health = await _fetch_health(ctx, name, namespace)
        if health is not None:
            ctx.health[key] = health
    own = ShardRef(view.created, name, view.uid, spec.slots)
    conflict = losing_conflict(own, shard_ranges.get(namespace, []))
    was_conflicted = ctx.published.get(key, view.status).get("phase") == "Conflict"
    if key in ctx.published and (conflict is not None) != was_conflicted:
        # The older shard went away (or a new overlap appeared): apply again.
        await reconcile_shard(ctx, key, view, shard_ranges, workloads)
        return
    applied = ctx.reconciled.get(key)
    if applied is None:
        return  # not reconciled by this process yet (kopf resumes every shard at start)
    await publish_status(ctx, key, applied, None, view.status, conflict, workload)


async def status_loop(
    ctx: Context,
    shard_views: kopf.Index[Key, ShardView],
    workloads: kopf.Index[Key, WorkloadView],
    shard_ranges: kopf.Index[str, ShardRef],
) -> None:
    """Every `status_interval_s`: poll each ready worker's /health and refresh every shard."""
    gate = asyncio.Semaphore(HEALTH_CONCURRENCY)

    async def one(key: Key, view: ShardView) -> None:
        async with gate:
            try:
                await refresh_shard(ctx, key, view, workloads, shard_ranges, poll=True)
            except Exception as error:  # one shard's failure must not stop the others
                log.warning(f"status_refresh_failed {key[0]}/{key[1]}: {error!r}")

    while True:
        await asyncio.sleep(ctx.config.status_interval_s)
        views = [(key, first(store)) for key, store in list(shard_views.items())]
        await asyncio.gather(*(one(key, view) for key, view in views if view is not None))


async def _fetch_health(ctx: Context, name: str, namespace: str) -> Health | None:
    if ctx.http is None:
        return None
    url = ctx.config.health_url(name, namespace)
    try:
        timeout = aiohttp.ClientTimeout(total=ctx.config.health_timeout_s)
        async with ctx.http.get(url, timeout=timeout) as response:
            body = await response.json()
        worker = body["worker"]
        return Health(int(worker["active"]), int(worker["maxActive"]))
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return None


async def start_status_loop(
    memo: Context,
    shard_views: kopf.Index[Key, ShardView],
    workloads: kopf.Index[Key, WorkloadView],
    shard_ranges: kopf.Index[str, ShardRef],
    **_: Any,
) -> None:
    memo.loop_task = asyncio.create_task(status_loop(memo, shard_views, workloads, shard_ranges))


async def stop_status_loop(memo: Context, **_: Any) -> None:
    if memo.loop_task is not None:
        memo.loop_task.cancel()
