"""A shard's status from what the operator observed: phase, conditions, numbers.

Pure: the caller passes the observations and the clock's reading. Conditions
keep their lastTransitionTime while their status does not change, as
metav1.Condition requires, so `kubectl wait --for=condition=Ready` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wasp.shard import WhatsAppShardSpec
from wasp_operator.conflicts import Conflict


@dataclass(frozen=True)
class Observed:
    """What the operator saw of a shard's children and worker."""

    generation: int
    statefulset_found: bool = False
    ready_replicas: int = 0
    rolled_out: bool = False  # the StatefulSet controller caught up with the current template
    active: int | None = None  # from the worker's /health, when it answered
    max_active: int | None = None
    conflict: Conflict | None = None


def phase_of(spec: WhatsAppShardSpec, seen: Observed, previous_phase: str | None) -> str:
    if seen.conflict is not None:
        return "Conflict"
    if spec.suspend:
        return "Suspended"
    if seen.ready_replicas >= 1:
        return "Ready"
    if previous_phase in ("Ready", "Degraded"):
        return "Degraded"  # it was serving and lost its pod
    return "Pending"


def _condition(
    kind: str,
    true: bool,
    reason: str,
    message: str,
    generation: int,
    previous: dict[str, dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "True" if true else "False"
    before = previous.get(kind)
    changed = before is None or before.get("status") != status
    return {
        "type": kind,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": now if changed or before is None else before["lastTransitionTime"],
        "reason": reason,
        "message": message,
    }


def shard_status(
    name: str,
    spec: WhatsAppShardSpec,
    seen: Observed,
    previous: dict[str, Any] | None,
    endpoint: str,
    now: str,
) -> dict[str, Any]:
    """The whole `status` of a shard (a merge patch replaces lists whole)."""
    previous = previous or {}
    phase = phase_of(spec, seen, previous.get("phase"))
    before = {c["type"]: c for c in previous.get("conditions") or [] if "type" in c}
    gen = seen.generation
    ready_reason, ready_message = {
        "Ready": ("WorkerReady", f"worker {name}-0 is ready"),
        "Pending": ("WorkerStarting", f"waiting for worker {name}-0 to become ready"),
        "Degraded": ("WorkerNotReady", f"worker {name}-0 is not ready"),
        "Suspended": ("Suspended", "spec.suspend is true: scaled to zero"),
        "Conflict": ("SlotConflict", seen.conflict.message() if seen.conflict else ""),
    }[phase]
    progressing = seen.conflict is None and not seen.rolled_out
    conditions = [
        _condition("Ready", phase == "Ready", ready_reason, ready_message, gen, before, now),
        _condition(
            "Progressing",
            progressing,
            "RollingOut" if progressing else "RolledOut",
            "the StatefulSet is rolling out the current spec"
            if progressing
            else "the StatefulSet runs the current spec",
            gen,
            before,
            now,
        ),
        _condition(
            "SlotConflict",
            seen.conflict is not None,
            "RangeOverlaps" if seen.conflict else "NoOverlap",
            seen.conflict.message()
            if seen.conflict
            else "no other shard in this namespace serves any of these slots",
            gen,
            before,
            now,
        ),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": gen,
        "readyReplicas": seen.ready_replicas,
        "endpoint": endpoint,
        "active": seen.active if seen.active is not None else 0,
        "maxActive": seen.max_active if seen.max_active is not None else spec.capacity.maxActive,
        "conditions": conditions,
    }
    if seen.active is None and phase == "Ready":
        status["active"] = previous.get("active", 0)
    return status
