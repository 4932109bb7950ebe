"""Slot ranges of shards in one namespace never overlap: who wins when they do.

The admission webhook refuses an overlapping shard; this is the same rule for
the reconcile path, for a shard that slipped past (webhook not installed, two
creates racing). The older shard keeps its range and is never touched; the
newer one is in conflict and gets no pods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wasp.slots import SlotRange


@dataclass(frozen=True, order=True)
class ShardRef:
    """What the conflict rule needs to know about a shard; ordered oldest first."""

    created: str  # RFC 3339 creationTimestamp: sorts chronologically as text
    name: str
    uid: str
    slots: SlotRange


@dataclass(frozen=True)
class Conflict:
    other: str
    shared: SlotRange

    def message(self) -> str:
        return (
            f"slots {self.shared} ({len(self.shared)} slots) are already served by shard "
            f"{self.other!r}; change slotFrom/slotTo so the ranges do not overlap"
        )


def overlaps(slots: SlotRange, others: Iterable[ShardRef], name: str) -> list[Conflict]:
    """Every other shard (by name) whose range shares slots with `slots`."""
    found = []
    for other in sorted(others):
        if other.name == name:
            continue
        shared = slots.overlap(other.slots)
        if shared is not None:
            found.append(Conflict(other.name, shared))
    return found


def losing_conflict(shard: ShardRef, others: Iterable[ShardRef]) -> Conflict | None:
    """The first older shard that owns some of `shard`'s slots, if any."""
    for other in sorted(others):
        if other.uid == shard.uid or other >= shard:
            continue
        shared = shard.slots.overlap(other.slots)
        if shared is not None:
            return Conflict(other.name, shared)
    return None
