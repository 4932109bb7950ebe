"""Which slots a cross-shard request reads, cut into one piece per shard.

Pure: no I/O. A request names its slots as `slots=A1-A100` (or one slot, `A7`),
an interval in slot order (prefix, then number), so every value the pattern
accepts means something: `A40-B10` is A40 and up, then B1..B10. Absent, it is
everything the API key may read. The interval is cut along the shards' ranges
into pieces, each a `SlotRange` inside one shard, which is what one call to
that shard's worker reads.

Scope: a slot-scoped key reads only inside its ranges; a request naming a
served slot outside them is refused (403 naming the slot), not narrowed, the
same answer a slot route gives, so a client never mistakes a narrowed listing
for the whole one. A workspace-scoped key is refused outright: workspaces are
sets of single slots from accounts.json, which a range read on a worker cannot
select; per-slot routes serve those keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wasp.slots import MAX_NUMBER, SLOT_PATTERN, Slot, SlotRange
from wasp_master.errors import Forbidden, NoShard
from wasp_master.keys import KeyRecord
from wasp_master.routing import ShardRoute

_SLOT = SLOT_PATTERN.removeprefix("^").removesuffix("$")
SLOTS_PATTERN = f"^{_SLOT}(-{_SLOT})?$"
"""`A1-A100`, or one slot `A7`: the query's `slots`."""


@dataclass(frozen=True)
class Interval:
    """Every slot from `low` to `high` inclusive, in slot order; empty if high < low."""

    low: Slot
    high: Slot

    @classmethod
    def parse(cls, text: str) -> Interval:
        """Text matching SLOTS_PATTERN (the query model has checked it)."""
        first, _, last = text.partition("-")
        return cls(Slot.parse(first), Slot.parse(last or first))

    def cut(self, shard: SlotRange) -> SlotRange | None:
        """The part of a shard's range inside this interval."""
        prefix = shard.prefix
        if not self.low.prefix <= prefix <= self.high.prefix:
            return None
        first = max(shard.first.number, self.low.number) if prefix == self.low.prefix else None
        last = min(shard.last.number, self.high.number) if prefix == self.high.prefix else None
        first = shard.first.number if first is None else first
        last = shard.last.number if last is None else last
        if first > last:
            return None
        return SlotRange(Slot(prefix, first), Slot(prefix, last))

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


EVERYTHING = Interval(Slot("A", 1), Slot("Z" * 8, MAX_NUMBER))


@dataclass(frozen=True)
class Piece:
    """The slots of one shard that one call reads."""

    route: ShardRoute
    slots: SlotRange


def _uncovered(wanted: SlotRange, cover: Iterable[SlotRange]) -> Slot | None:
    """The first slot of `wanted` outside every range of `cover`, or None."""
    number = wanted.first.number
    for part in sorted(r for r in cover if r.prefix == wanted.prefix):
        if part.first.number > number:
            break
        number = max(number, part.last.number + 1)
    return Slot(wanted.prefix, number) if number <= wanted.last.number else None


def pieces(routes: Sequence[ShardRoute], slots: str | None, key: KeyRecord) -> list[Piece]:
    """The pieces a request reads, in slot order; 403 for a slot outside the key's scope,
    404 when no shard serves any slot asked for."""
    if key.workspaces is not None:
        raise Forbidden(
            f"key {key.id!r} is scoped to {key.scope()}: reads across shards select slot "
            "ranges, so only an unscoped or slot-scoped key may make them; use the "
            "/api/accounts/{slot}/... routes"
        )
    asked = Interval.parse(slots) if slots is not None else EVERYTHING
    found: list[Piece] = []
    for route in routes:
        part = asked.cut(route.slots)
        if part is None:
            continue
        if key.slots is None:
            found.append(Piece(route, part))
            continue
        if slots is not None:  # named: every served slot must be the key's
            outside = _uncovered(part, key.slots)
            if outside is not None:
                raise Forbidden(f"slot {outside} is outside key {key.id!r}'s {key.scope()}")
            found.append(Piece(route, part))
            continue
        for scope in sorted(key.slots):  # absent: exactly the key's ranges
            inside = part.overlap(scope)
            if inside is not None:
                found.append(Piece(route, inside))
    if not found and slots is not None:
        raise NoShard(f"in {asked}")
    return _merged(found)


def _merged(found: list[Piece]) -> list[Piece]:
    """Adjacent or overlapping pieces of one shard as one (a key's ranges may touch)."""
    out: list[Piece] = []
    for piece in sorted(found, key=lambda p: (p.slots.first, p.route.id)):
        last = out[-1] if out else None
        if (
            last is not None
            and last.route.id == piece.route.id
            and piece.slots.first.number <= last.slots.last.number + 1
        ):
            high = max(last.slots.last.number, piece.slots.last.number)
            out[-1] = Piece(last.route, SlotRange(last.slots.first, Slot(last.slots.prefix, high)))
        else:
            out.append(piece)
    return out
