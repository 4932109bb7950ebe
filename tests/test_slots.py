"""The slot model: parse, format, order, ranges, containment, overlap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from wasp.slots import (
    MAX_NUMBER,
    MAX_PREFIX_LENGTH,
    SLOT_PATTERN,
    Slot,
    SlotError,
    SlotId,
    SlotRange,
)

prefixes = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=MAX_PREFIX_LENGTH)
numbers = st.integers(min_value=1, max_value=MAX_NUMBER)
slots = st.builds(Slot, prefixes, numbers)


@st.composite
def ranges(draw: st.DrawFn, prefix: str | None = None) -> SlotRange:
    chosen = prefix or draw(prefixes)
    a, b = sorted((draw(st.integers(1, 500)), draw(st.integers(1, 500))))
    return SlotRange(Slot(chosen, a), Slot(chosen, b))


@given(slots)
def test_format_then_parse_gives_the_same_slot(slot: Slot) -> None:
    assert Slot.parse(str(slot)) == slot


@given(prefixes, numbers, numbers)
def test_slots_of_one_prefix_order_by_number_not_text(prefix: str, a: int, b: int) -> None:
    assert (Slot(prefix, a) < Slot(prefix, b)) == (a < b)


def test_a2_sorts_before_a10_and_prefix_comes_first() -> None:
    given_order = ["A10", "B1", "A2", "A1", "ZZ7", "B350"]
    assert [str(s) for s in sorted(map(Slot.parse, given_order))] == [
        "A1",
        "A2",
        "A10",
        "B1",
        "B350",
        "ZZ7",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a1",
        "A0",
        "A-1",
        "A1.5",
        "../A1",
        "A01",
        "1A",
        "A",
        "",
        " A1",
        "A1 ",
        "A1\n",
        "A 1",
        "\uff211",
        "A\u0661",
        "AB/1",
        "A1/../../etc",
        "ABCDEFGHI1",
        "A1234567890",
        "x" * 2048,
        "A" + "1" * 2047,
    ],
)
def test_bad_slot_text_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises(SlotError, match="invalid slot"):
        Slot.parse(text)


@pytest.mark.parametrize("value", [None, 1, 1.5, ["A1"], {"slot": "A1"}, b"A1"])
def test_non_text_is_refused(value: object) -> None:
    with pytest.raises(SlotError, match="expected a string"):
        Slot.parse(value)


def test_error_message_for_huge_input_stays_short() -> None:
    with pytest.raises(SlotError) as caught:
        Slot.parse("A" * 2048)
    assert len(str(caught.value)) < 300
    assert "2048 chars" in str(caught.value)


@given(st.text(max_size=40))
def test_parse_accepts_exactly_the_documented_grammar(text: str) -> None:
    import re

    matches = re.fullmatch(SLOT_PATTERN, text) is not None
    try:
        parsed = Slot.parse(text)
    except SlotError:
        assert not matches
    else:
        assert matches
        assert str(parsed) == text


def test_range_rejects_mixed_prefixes_and_reversed_ends() -> None:
    with pytest.raises(SlotError, match="share one prefix"):
        SlotRange.parse("A1", "B50")
    with pytest.raises(SlotError, match="comes after"):
        SlotRange.parse("A50", "A1")
    with pytest.raises(SlotError, match="invalid slot"):
        SlotRange.parse("A1", "a50")


def test_range_length_iteration_and_membership() -> None:
    shard = SlotRange.parse("A1", "A50")
    assert len(shard) == 50
    assert [str(s) for s in shard][:3] == ["A1", "A2", "A3"]
    assert Slot.parse("A50") in shard
    assert Slot.parse("A51") not in shard
    assert Slot.parse("B1") not in shard
    assert "A1" not in shard  # text is not a slot: parse first
    assert str(shard) == "A1..A50"


@given(ranges(), slots)
def test_containment_matches_bounds(shard: SlotRange, slot: Slot) -> None:
    expected = slot.prefix == shard.prefix and shard.first <= slot <= shard.last
    assert (slot in shard) == expected


@given(ranges(prefix="A"), ranges(prefix="A"))
def test_overlap_is_exactly_the_shared_slots(a: SlotRange, b: SlotRange) -> None:
    shared = set(a) & set(b)
    overlap = a.overlap(b)
    assert overlap == b.overlap(a)
    assert a.overlaps(b) == bool(shared)
    if overlap is None:
        assert not shared
    else:
        assert set(overlap) == shared


@given(ranges(prefix="A"), ranges(prefix="B"))
def test_ranges_of_different_prefixes_never_overlap(a: SlotRange, b: SlotRange) -> None:
    assert a.overlap(b) is None


class _Request(BaseModel):
    slot: SlotId


def test_pydantic_field_parses_serialises_and_explains() -> None:
    assert _Request.model_validate({"slot": "A10"}).slot == Slot("A", 10)
    assert _Request(slot=Slot("B", 3)).model_dump() == {"slot": "B3"}
    with pytest.raises(ValidationError, match="upper-case letters"):
        _Request.model_validate({"slot": "../A1"})
    schema = _Request.model_json_schema()["properties"]["slot"]
    assert schema["pattern"] == SLOT_PATTERN


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("A1-A50", "A1", "A50"),
        ("A1..A50", "A1", "A50"),
        ("B7", "B7", "B7"),
        (" C2 - C3 ", "C2", "C3"),
    ],
)
def test_range_text_with_dash_dots_or_one_slot(text: str, first: str, last: str) -> None:
    assert SlotRange.from_text(text) == SlotRange.parse(first, last)


@pytest.mark.parametrize("text", ["A1-B5", "A9-A2", "A1-", "-A1", "a1-a5", "", 7])
def test_bad_range_text_is_a_slot_error(text: object) -> None:
    with pytest.raises(SlotError):
        SlotRange.from_text(text)
