"""Which slots a read across shards asks each shard for (`selection.pieces`), against
an oracle that walks every slot of a small universe one by one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wasp_master.errors import Forbidden, NoShard
from wasp_master.keys import KeyRecord
from wasp_master.routing import ShardRoute
from wasp_master.selection import Interval, pieces

from wasp.slots import Slot, SlotRange

PREFIXES = ("A", "B", "C")
TOP = 30
UNIVERSE = [Slot(p, n) for p in PREFIXES for n in range(1, TOP + 1)]
HASH = "sha256:" + "1" * 64


def key_of(ranges: list[SlotRange] | None) -> KeyRecord:
    return KeyRecord(
        id="k", hash=HASH, operations=("read",), slots=tuple(ranges) if ranges else None
    )


@st.composite
def ranges(draw: st.DrawFn, count: int) -> list[SlotRange]:
    found: list[SlotRange] = []
    for _ in range(count):
        prefix = draw(st.sampled_from(PREFIXES))
        low = draw(st.integers(1, TOP))
        high = draw(st.integers(low, TOP))
        found.append(SlotRange(Slot(prefix, low), Slot(prefix, high)))
    return found


@st.composite
def shards(draw: st.DrawFn) -> list[ShardRoute]:
    """Disjoint ranges, as a routing table holds them."""
    taken: set[Slot] = set()
    routes = []
    for number, candidate in enumerate(draw(ranges(draw(st.integers(0, 5))))):
        if taken & set(candidate):
            continue
        taken |= set(candidate)
        routes.append(ShardRoute(f"w{number}", f"http://w{number}", candidate))
    return sorted(routes, key=lambda r: r.slots.first)


def slot_text() -> st.SearchStrategy[str]:
    return st.builds(lambda p, n: f"{p}{n}", st.sampled_from(PREFIXES), st.integers(1, TOP + 5))


@settings(max_examples=400, deadline=None)
@given(
    routes=shards(),
    asked=st.none() | st.tuples(slot_text(), st.none() | slot_text()),
    scope=st.none() | st.integers(1, 3).flatmap(ranges),
)
def test_pieces_are_exactly_the_served_slots_asked_for_inside_the_scope(
    routes: list[ShardRoute],
    asked: tuple[str, str | None] | None,
    scope: list[SlotRange] | None,
) -> None:
    text = None if asked is None else asked[0] + ("" if asked[1] is None else "-" + asked[1])
    order = {slot: (slot.prefix, slot.number) for slot in UNIVERSE}
    if text is None:
        wanted = set(UNIVERSE)
    else:
        low, _, high = text.partition("-")
        lo, hi = Slot.parse(low), Slot.parse(high or low)
        wanted = {
            s for s in UNIVERSE if (lo.prefix, lo.number) <= order[s] <= (hi.prefix, hi.number)
        }
    owner = {s: r.id for r in routes for s in r.slots}
    served = {s for s in wanted if s in owner}
    covered = set(UNIVERSE) if scope is None else {s for r in scope for s in r}
    key = key_of(scope)
    if text is not None and served - covered:
        with pytest.raises(Forbidden) as refused:
            pieces(routes, text, key)
        assert str(min(served - covered)) in refused.value.reason
        return
    if text is not None and not served:
        with pytest.raises(NoShard):
            pieces(routes, text, key)
        return
    got = pieces(routes, text, key)
    read = [s for p in got for s in p.slots]
    assert len(read) == len(set(read)), "a slot read twice"
    assert set(read) == served & covered
    for piece in got:
        assert all(owner[s] == piece.route.id for s in piece.slots)
    assert [p.slots.first for p in got] == sorted(p.slots.first for p in got)


def test_a_workspace_scoped_key_is_refused() -> None:
    key = KeyRecord(id="ws", hash=HASH, operations=("read",), workspaces=("sales",))
    route = ShardRoute("w1", "http://w1", SlotRange.parse("A1", "A50"))
    with pytest.raises(Forbidden, match="workspaces sales"):
        pieces([route], None, key)


def test_an_interval_across_prefixes_runs_in_slot_order() -> None:
    interval = Interval.parse("A40-B10")
    assert interval.cut(SlotRange.parse("A1", "A50")) == SlotRange.parse("A40", "A50")
    assert interval.cut(SlotRange.parse("B1", "B50")) == SlotRange.parse("B1", "B10")
    assert interval.cut(SlotRange.parse("C1", "C5")) is None
    assert Interval.parse("A9-A3").cut(SlotRange.parse("A1", "A50")) is None
