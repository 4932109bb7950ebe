"""Routing decisions, pure: the table's lookup, the slot a request names, shards files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wasp_master.routing import RoutingTable, ShardRoute, slot_in_body, slot_in_path
from wasp_master.shards import parse_shards, route_of

from wasp.slots import Slot, SlotRange


def table_of(*ranges: tuple[str, str]) -> RoutingTable:
    return RoutingTable(
        [
            ShardRoute(f"w{i}", f"http://127.0.0.1:{3001 + i}", SlotRange.parse(a, b))
            for i, (a, b) in enumerate(ranges)
        ]
    )


def test_lookup_finds_the_owner_or_nobody() -> None:
    table = table_of(("A51", "A100"), ("A1", "A50"), ("B1", "B9"), ("AA1", "AA5"))
    assert table.lookup(Slot.parse("A1")).id == "w1"  # type: ignore[union-attr]
    assert table.lookup(Slot.parse("A50")).id == "w1"  # type: ignore[union-attr]
    assert table.lookup(Slot.parse("A51")).id == "w0"  # type: ignore[union-attr]
    assert table.lookup(Slot.parse("AA3")).id == "w3"  # type: ignore[union-attr]
    for gap in ("A101", "B10", "C1", "AA6", "A999999999"):
        assert table.lookup(Slot.parse(gap)) is None
    assert table.first().id == "w1"  # type: ignore[union-attr]
    table.remove("w1")
    assert table.lookup(Slot.parse("A1")) is None


PREFIXES = ("A", "B", "AA")


@given(
    layout=st.dictionaries(
        st.sampled_from(PREFIXES),
        st.lists(st.integers(1, 10_000), min_size=1, max_size=30, unique=True),
        min_size=1,
    ),
    probe_prefix=st.sampled_from((*PREFIXES, "C")),
    probe=st.integers(1, 10_100),
)
def test_lookup_agrees_with_an_oracle_on_numbers(
    layout: dict[str, list[int]], probe_prefix: str, probe: int
) -> None:
    """The oracle knows ranges only as (prefix, first, last) integers, not as slots."""
    bounds: list[tuple[str, int, int]] = []
    for prefix, starts in layout.items():
        starts.sort()
        for at, start in enumerate(starts):  # disjoint, with gaps between some of them
            end = (starts[at + 1] - 1) if at + 1 < len(starts) else start + 7
            bounds.append((prefix, start, max(start, end - (start % 3))))
    table = table_of(*((f"{p}{lo}", f"{p}{hi}") for p, lo, hi in bounds))
    expected = [
        f"w{i}"
        for i, (prefix, lo, hi) in enumerate(bounds)
        if prefix == probe_prefix and lo <= probe <= hi
    ]
    found = table.lookup(Slot.parse(f"{probe_prefix}{probe}"))
    assert ([found.id] if found else []) == expected


def test_slot_comes_from_the_url_then_the_body() -> None:
    assert slot_in_path("/api/accounts/A7/connect") == "A7"
    assert slot_in_path("/api/accounts/A7") == "A7"
    assert slot_in_path("/api/accounts") is None
    assert slot_in_path("/api/roles") is None
    assert slot_in_body({"slot": "A3", "boundSlot": "A4"}) == "A3"
    assert slot_in_body({"boundSlot": "A4"}) == "A4"
    assert slot_in_body({"role": {"boundSlot": "A5"}}) == "A5"
    assert slot_in_body({"role": "A5"}) is None
    assert slot_in_body(["A1"]) is None


def test_shards_file_as_json_or_yaml() -> None:
    seeds = (
        '[{"id":"w1","port":3001,"from":"A1","to":"A50","workdir":"./data_w1"},'
        '{"id":"w2","port":3002,"from":"A51","to":"A100","workdir":"./data_w2"}]'
    )
    shards = parse_shards(seeds)
    assert [(s.id, s.url, str(s.slot_from), str(s.slot_to)) for s in shards] == [
        ("w1", "http://127.0.0.1:3001", "A1", "A50"),
        ("w2", "http://127.0.0.1:3002", "A51", "A100"),
    ]
    assert parse_shards("shards:\n- {id: w1, port: 3001, from: A1, to: A50}\n")[0].id == "w1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            '[{"id":"w1","port":1,"from":"A1","to":"A50"},{"id":"w2","port":2,"from":"A50","to":"A60"}]',
            "overlap",
        ),
        (
            '[{"id":"w1","port":1,"from":"A1","to":"A5"},{"id":"w1","port":2,"from":"A6","to":"A9"}]',
            "twice",
        ),
        ('[{"id":"w1","port":1,"from":"A9","to":"A1"}]', "first slot comes after"),
        ('[{"id":"w1","port":1,"from":"a1","to":"A5"}]', "invalid slot"),
        ('[{"id":"w1","port":0,"from":"A1","to":"A5"}]', "greater than or equal to 1"),
        # A worker refuses SHARD_NAME=9w at start; the file is refused before that.
        (
            '[{"id":"9w","port":1,"from":"A1","to":"A5"}]',
            r"shards\.0\.id: .*invalid shard name '9w'",
        ),
        ('[{"id":"w-","port":1,"from":"A1","to":"A5"}]', "starting with a letter and ending"),
        ('{"nope": 1}', "list"),
    ],
)
def test_bad_shards_files_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_shards(text)


def test_a_shard_resource_becomes_a_route() -> None:
    body = {
        "metadata": {"name": "w1", "namespace": "crm", "generation": 3},
        "spec": {"slotFrom": "A1", "slotTo": "A50", "suspend": False},
        "status": {
            "phase": "Ready",
            "observedGeneration": 3,
            "endpoint": "http://w1-0.w1.crm.svc:8080",
        },
    }
    route = route_of(body, None)
    assert route == ShardRoute("w1", "http://w1-0.w1.crm.svc:8080", SlotRange.parse("A1", "A50"))
    stale = {**body, "status": {**body["status"], "observedGeneration": 2}}
    assert route_of(stale, None).ready is False  # type: ignore[union-attr]
    unpublished = {**body, "status": {"phase": "Pending"}}
    assert route_of(unpublished, None).url == "http://w1-0.w1.crm.svc:8080"  # type: ignore[union-attr]
    asleep = {**body, "spec": {**body["spec"], "suspend": True}, "status": {"phase": "Suspended"}}
    assert route_of(asleep, "http://127.0.0.1:9/{namespace}/{name}").suspended is True  # type: ignore[union-attr]
    assert route_of({**body, "status": {"phase": "Conflict"}}, None) is None
