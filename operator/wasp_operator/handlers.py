"""kopf handlers: the thin shell around the pure decisions of this package.

- indexes keep what every decision needs in memory (shard ranges for the
  overlap rule, shards, StatefulSet readiness), so no handler lists;
- create/update/resume apply the children (`reconcile`);
- a StatefulSet event refreshes its shard's status at once, and one
  operator-wide loop reads workers' /health and re-checks overlaps;
- a validating webhook refuses overlapping ranges at admission.

No handler here needs a finalizer (kopf timers would add one), so deleting a
shard never waits for the operator: owner references let Kubernetes' garbage
collector remove the children. Blocking client calls run in threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from wasp.contract import CRD
from wasp.shard import WhatsAppShardSpec
from wasp.slots import SlotError, SlotRange
from wasp_operator import children
from wasp_operator.config import OperatorConfig
from wasp_operator.conflicts import Conflict, ShardRef, losing_conflict, overlaps
from wasp_operator.kube import Kube
from wasp_operator.metrics import OperatorMetrics
from wasp_operator.status import Observed, shard_status

SHARDS = CRD.resource
OWNED = {"app.kubernetes.io/managed-by": children.MANAGER}
HEALTH_CONCURRENCY = 32
RETRY_S = 5  # a failed reconcile (apiserver hiccup) is retried this soon, not kopf's 60 s
log = logging.getLogger("wasp.operator")

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Health:
    active: int
    max_active: int


@dataclass
class Context:
    """Everything the handlers share, handed to them by kopf as `memo`."""

    config: OperatorConfig
    kube: Kube
    metrics: OperatorMetrics
    http: aiohttp.ClientSession | None = None
    health: dict[Key, Health] = field(default_factory=dict)
    published: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # The spec each shard's children were last made from: status between reconciles
    # describes that one, not a newer spec the index already has but nobody applied.
    reconciled: dict[Key, WhatsAppShardSpec] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    loop_task: asyncio.Task[None] | None = None

    # kopf copies the memo for every object it handles; this state is operator-wide.
    def __copy__(self) -> Context:
        return self

    def __deepcopy__(self, _memo: dict[int, Any]) -> Context:
        return self


@dataclass(frozen=True)
class ShardView:
    """A shard as the indexes hold it."""

    uid: str
    created: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]

    @classmethod
    def of(cls, uid: str, meta: Any, spec: Any, status: Any) -> ShardView:
        """From kopf's handler kwargs."""
        created, generation = meta.get("creationTimestamp", ""), meta.get("generation", 1)
        return cls(uid, created, generation, dict(spec), dict(status))


@dataclass(frozen=True)
class WorkloadView:
    ready_replicas: int
    rolled_out: bool


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_spec(spec: Any) -> WhatsAppShardSpec:
    try:
        return WhatsAppShardSpec.model_validate(dict(spec))
    except ValidationError as error:
        # The CRD schema should have refused it; never build pods from a bad spec.
        raise kopf.PermanentError(f"invalid spec: {error}") from None


def _first(store: Iterable[Any] | None) -> Any | None:
    return next(iter(store), None) if store is not None else None


# -- indexes ------------------------------------------------------------------


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


# -- status -------------------------------------------------------------------


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


# -- reconcile ----------------------------------------------------------------


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
            ctx, key, spec, view.generation, view.status, conflict, _first(workloads.get(key))
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


# -- status refresh -----------------------------------------------------------


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
    view: ShardView | None = _first(shard_views.get((namespace, name)))
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
    workload: WorkloadView | None = _first(workloads.get(key))
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
        views = [(key, _first(store)) for key, store in list(shard_views.items())]
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


# -- admission ----------------------------------------------------------------


def refuse_overlap(
    spec: Any,
    name: str | None,
    namespace: str | None,
    shard_ranges: kopf.Index[str, ShardRef],
    **_: Any,
) -> None:
    """Admission: refuse a shard whose range overlaps another shard's in its namespace."""
    try:
        slots = SlotRange.parse(spec.get("slotFrom"), spec.get("slotTo"))
    except SlotError as error:
        raise kopf.AdmissionError(str(error), code=400) from None
    found = overlaps(slots, shard_ranges.get(namespace or "", []), name or "")
    if found:
        details = "; ".join(
            f"shard {c.other!r} already serves {c.shared} ({len(c.shared)} slots)" for c in found
        )
        raise kopf.AdmissionError(
            f"slot range {slots} overlaps other shards in namespace {namespace!r}: {details}",
            code=409,
        )


# -- phase metric -------------------------------------------------------------


def track_phase(
    namespace: str, name: str, event: Any, status: Any, memo: Context, **_: Any
) -> None:
    if event.get("type") == "DELETED":
        memo.metrics.forget(namespace, name)
        memo.published.pop((namespace, name), None)
        memo.reconciled.pop((namespace, name), None)
        memo.health.pop((namespace, name), None)
        memo.locks.pop((namespace, name), None)
    else:
        memo.metrics.phase_seen(namespace, name, status.get("phase") or "Pending")


def _loose(handler: Any) -> Any:
    """kopf's callback protocols list every kwarg; our handlers take the few they use."""
    return handler


def register(registry: kopf.OperatorRegistry, *, admission: bool) -> None:
    """Attach every handler to `registry`.

    The webhook handler only when an admission server is configured: kopf
    refuses to start with admission handlers and nowhere to serve them.
    """
    kopf.index(*SHARDS, id="shard_ranges", registry=registry)(_loose(index_ranges))
    kopf.index(*SHARDS, id="shard_views", registry=registry)(_loose(index_shards))
    kopf.index("apps", "v1", "statefulsets", labels=OWNED, id="workloads", registry=registry)(
        _loose(index_workloads)
    )
    kopf.on.resume(*SHARDS, id="reconcile", backoff=RETRY_S, registry=registry)(_loose(reconcile))
    kopf.on.create(*SHARDS, id="reconcile", backoff=RETRY_S, registry=registry)(_loose(reconcile))
    kopf.on.update(*SHARDS, id="reconcile", field="spec", backoff=RETRY_S, registry=registry)(
        _loose(reconcile)
    )
    kopf.on.event("apps", "v1", "statefulsets", labels=OWNED, id="workload", registry=registry)(
        _loose(workload_changed)
    )
    kopf.on.event(*SHARDS, id="phase", registry=registry)(_loose(track_phase))
    kopf.on.startup(id="status_loop", registry=registry)(_loose(start_status_loop))
    kopf.on.cleanup(id="status_loop", registry=registry)(_loose(stop_status_loop))
    if not admission:
        return
    kopf.on.validate(
        *SHARDS,
        id="slot-overlap",
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
        registry=registry,
    )(_loose(refuse_overlap))
