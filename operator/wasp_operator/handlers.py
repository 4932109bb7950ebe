"""kopf handlers: the thin shell around the pure decisions of this package.

- indexes keep what every decision needs in memory (shard ranges for the
  overlap rule, shard status, StatefulSet readiness), so no handler lists;
- create/update/resume apply the children (`reconcile`);
- a StatefulSet event and a per-shard timer refresh the status;
- a validating webhook refuses overlapping ranges at admission.

Blocking client calls run in threads (`asyncio.to_thread`), never on the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from wasp.shard import GROUP, PLURAL, VERSION, WhatsAppShardSpec
from wasp.slots import SlotError, SlotRange
from wasp_operator import children
from wasp_operator.config import OperatorConfig
from wasp_operator.conflicts import Conflict, ShardRef, losing_conflict, overlaps
from wasp_operator.kube import Kube
from wasp_operator.metrics import OperatorMetrics
from wasp_operator.status import Observed, shard_status

SHARDS = (GROUP, VERSION, PLURAL)
OWNED = {"app.kubernetes.io/managed-by": children.MANAGER}


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
    health: dict[tuple[str, str], Health] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardView:
    uid: str
    spec: dict[str, Any]
    status: dict[str, Any]


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
    namespace: str, name: str, uid: str, spec: Any, status: Any, **_: Any
) -> dict[tuple[str, str], ShardView]:
    return {(namespace, name): ShardView(uid, dict(spec), dict(status))}


def index_workloads(
    namespace: str, name: str, body: Any, **_: Any
) -> dict[tuple[str, str], WorkloadView]:
    spec, status, meta = body.get("spec", {}), body.get("status", {}), body.get("metadata", {})
    replicas = spec.get("replicas", 1)
    rolled_out = (
        status.get("observedGeneration", 0) >= meta.get("generation", 1)
        and status.get("updatedReplicas", 0) == replicas
        and status.get("currentRevision") == status.get("updateRevision")
    )
    return {(namespace, name): WorkloadView(status.get("readyReplicas", 0), rolled_out)}


def _first(store: Iterable[Any] | None) -> Any | None:
    return next(iter(store), None) if store is not None else None


# -- status -------------------------------------------------------------------


async def publish_status(
    ctx: Context,
    name: str,
    namespace: str,
    spec: WhatsAppShardSpec,
    generation: int,
    previous: dict[str, Any],
    conflict: Conflict | None,
    workload: WorkloadView | None,
) -> str:
    """Write the shard's status if it changed; return its phase."""
    health = ctx.health.get((namespace, name))
    seen = Observed(
        generation=generation,
        statefulset_found=workload is not None,
        ready_replicas=workload.ready_replicas if workload else 0,
        rolled_out=workload.rolled_out if workload else False,
        active=health.active if health else None,
        max_active=health.max_active if health else None,
        conflict=conflict,
    )
    status = shard_status(name, spec, seen, previous, ctx.config.endpoint(name, namespace), now())
    if status != {k: previous.get(k) for k in status}:
        await asyncio.to_thread(ctx.kube.patch_shard_status, name, namespace, status)
    return str(status["phase"])


def _conflict_of(
    name: str,
    uid: str,
    meta: Any,
    spec: WhatsAppShardSpec,
    shard_ranges: kopf.Index[str, ShardRef],
    namespace: str,
) -> Conflict | None:
    own = ShardRef(meta.get("creationTimestamp", ""), name, uid, spec.slots)
    return losing_conflict(own, shard_ranges.get(namespace, []))


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
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Make the shard's Service and StatefulSet match its spec, then report status."""
    ctx = memo
    started = time.perf_counter()
    result = "error"
    try:
        model = parse_spec(spec)
        conflict = _conflict_of(name, uid, meta, model, shard_ranges, namespace)
        workload = await _apply_children(ctx, name, namespace, uid, model, conflict)
        if conflict is not None:
            logger.warning(f"slot conflict: {conflict.message()}")
        await publish_status(
            ctx, name, namespace, model, meta.get("generation", 1), dict(status), conflict, workload
        )
        result = "conflict" if conflict else "ok"
    finally:
        ctx.metrics.reconciled(result, time.perf_counter() - started)


async def _apply_children(
    ctx: Context,
    name: str,
    namespace: str,
    uid: str,
    spec: WhatsAppShardSpec,
    conflict: Conflict | None,
) -> WorkloadView | None:
    config, kube = ctx.config, ctx.kube
    if conflict is not None:
        # Create nothing; if this shard had pods before the overlap, stop them.
        existing = await asyncio.to_thread(kube.read_statefulset, name, namespace)
        if existing is None or not _owned_by(existing, uid):
            return None
    else:
        await asyncio.to_thread(kube.apply_service, children.service(name, namespace, uid, config))
    manifest = children.statefulset(
        name, namespace, uid, spec, config, conflicted=conflict is not None
    )
    applied = await asyncio.to_thread(kube.apply_statefulset, manifest)
    ready = (applied.status.ready_replicas if applied.status else 0) or 0
    return WorkloadView(ready, rolled_out=False)


def _owned_by(statefulset: Any, uid: str) -> bool:
    return any(ref.uid == uid for ref in statefulset.metadata.owner_references or [])


# -- status refresh -----------------------------------------------------------


async def workload_changed(
    namespace: str,
    name: str,
    event: Any,
    memo: Context,
    shard_views: kopf.Index[tuple[str, str], ShardView],
    workloads: kopf.Index[tuple[str, str], WorkloadView],
    shard_ranges: kopf.Index[str, ShardRef],
    **_: Any,
) -> None:
    """A shard's StatefulSet changed (a pod became ready or went away): refresh status."""
    if event.get("type") == "DELETED":
        return
    view: ShardView | None = _first(shard_views.get((namespace, name)))
    if view is None:
        return
    await _refresh(memo, name, namespace, view, workloads, shard_ranges)


async def _refresh(
    ctx: Context,
    name: str,
    namespace: str,
    view: ShardView,
    workloads: kopf.Index[tuple[str, str], WorkloadView],
    shard_ranges: kopf.Index[str, ShardRef],
) -> None:
    try:
        spec = WhatsAppShardSpec.model_validate(view.spec)
    except ValidationError:
        return
    own = _first(ref for ref in shard_ranges.get(namespace, []) if ref.uid == view.uid)
    conflict = losing_conflict(own, shard_ranges.get(namespace, [])) if own else None
    generation = view.status.get("observedGeneration")
    if generation is None:
        return  # not reconciled yet: the create handler writes the first status
    await publish_status(
        ctx,
        name,
        namespace,
        spec,
        generation,
        view.status,
        conflict,
        _first(workloads.get((namespace, name))),
    )


async def poll_worker(
    name: str,
    namespace: str,
    uid: str,
    meta: Any,
    spec: Any,
    status: Any,
    memo: Context,
    shard_ranges: kopf.Index[str, ShardRef],
    shard_views: kopf.Index[tuple[str, str], ShardView],
    workloads: kopf.Index[tuple[str, str], WorkloadView],
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Every few seconds: read the worker's /health, re-check the overlap rule, refresh."""
    ctx = memo
    workload: WorkloadView | None = _first(workloads.get((namespace, name)))
    if workload is not None and workload.ready_replicas > 0:
        health = await _fetch_health(ctx, name, namespace)
        if health is not None:
            ctx.health[(namespace, name)] = health
    model = parse_spec(spec)
    conflict = _conflict_of(name, uid, meta, model, shard_ranges, namespace)
    was_conflicted = status.get("phase") == "Conflict"
    if (conflict is not None) != was_conflicted:
        # The other shard went away (or a new overlap appeared): apply again.
        await reconcile(
            name=name,
            namespace=namespace,
            uid=uid,
            meta=meta,
            spec=spec,
            status=status,
            memo=memo,
            shard_ranges=shard_ranges,
            logger=logger,
        )
        return
    view = _first(shard_views.get((namespace, name)))
    if view is not None:
        await _refresh(ctx, name, namespace, view, workloads, shard_ranges)


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
    else:
        memo.metrics.phase_seen(namespace, name, status.get("phase") or "Pending")


def _loose(handler: Any) -> Any:
    """kopf's callback protocols list every kwarg; our handlers take the few they use."""
    return handler


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach every handler to `registry`, with the intervals of `config`."""
    kopf.index(*SHARDS, id="shard_ranges", registry=registry)(_loose(index_ranges))
    kopf.index(*SHARDS, id="shard_views", registry=registry)(_loose(index_shards))
    kopf.index("apps", "v1", "statefulsets", labels=OWNED, id="workloads", registry=registry)(
        _loose(index_workloads)
    )
    kopf.on.resume(*SHARDS, id="reconcile", registry=registry)(_loose(reconcile))
    kopf.on.create(*SHARDS, id="reconcile", registry=registry)(_loose(reconcile))
    kopf.on.update(*SHARDS, id="reconcile", field="spec", registry=registry)(_loose(reconcile))
    kopf.on.event("apps", "v1", "statefulsets", labels=OWNED, id="workload", registry=registry)(
        _loose(workload_changed)
    )
    kopf.timer(
        *SHARDS,
        id="status",
        interval=config.status_interval_s,
        initial_delay=config.status_interval_s,
        registry=registry,
    )(_loose(poll_worker))
    kopf.on.event(*SHARDS, id="phase", registry=registry)(_loose(track_phase))
    kopf.on.validate(
        *SHARDS,
        id="slot-overlap",
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
        registry=registry,
    )(_loose(refuse_overlap))
