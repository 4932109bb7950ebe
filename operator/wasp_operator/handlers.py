"""kopf handlers: the thin shell around the pure decisions of this package, and
`register`, which attaches each one to its events.

- `indexes` keep what every decision needs in memory (shard ranges for the
  overlap rule, shards, StatefulSet readiness), so no handler lists;
- create/update/resume apply the children (`reconcile`);
- a StatefulSet event refreshes its shard's status at once, and one
  operator-wide loop reads workers' /health and re-checks overlaps (`refresh`);
  both write status through `publish`;
- a validating webhook refuses overlapping ranges at admission (`admission`).

No handler here needs a finalizer (kopf timers would add one), so deleting a
shard never waits for the operator: owner references let Kubernetes' garbage
collector remove the children. Blocking client calls run in threads.
"""

from __future__ import annotations

from typing import Any

import kopf

from wasp.contract import CRD
from wasp_operator import children
from wasp_operator.admission import refuse_overlap
from wasp_operator.context import Context
from wasp_operator.indexes import index_ranges, index_shards, index_workloads
from wasp_operator.reconcile import reconcile
from wasp_operator.refresh import start_status_loop, stop_status_loop, workload_changed

SHARDS = CRD.resource
OWNED = {"app.kubernetes.io/managed-by": children.MANAGER}
RETRY_S = 5  # a failed reconcile (apiserver hiccup) is retried this soon, not kopf's 60 s


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
