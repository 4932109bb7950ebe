"""The data API's keyed cursors (`wasp.data_api`): every string the schema admits names a
position (so a schema-valid request is never refused), and an item's cursor names its
own key exactly, so "after this cursor" starts right after the item."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wasp import data_api
from wasp.data_api import CURSOR_PATTERN, Sort

SORTS: list[Sort] = ["last", "unread", "name", "chat", "time"]
PATTERN = re.compile(CURSOR_PATTERN)

slots = st.from_regex(r"\A[A-Z]{1,8}[1-9][0-9]{0,8}\Z")
stamps = st.floats(min_value=0, max_value=1e11, allow_nan=False) | st.integers(0, 10**10).map(float)
items = st.fixed_dictionaries(
    {
        "slot": slots,
        "id": st.integers(1, 2**63 - 1),
        "timestamp": stamps,
        "last_timestamp": stamps,
        "unread": st.integers(0, 10**6),
        "name": st.none() | st.text(max_size=40),
    }
)


@given(st.from_regex(CURSOR_PATTERN, fullmatch=True), st.sampled_from(SORTS))
def test_every_cursor_the_schema_admits_is_a_position(text: str, sort: Sort) -> None:
    key = data_api.decode(text, sort)
    row, slot = key if sort == "time" else (key[-1], key[-2])  # `time`: (id, slot)
    assert isinstance(row, int)
    assert isinstance(slot, str)
    assert PATTERN.fullmatch(data_api.encode(key, sort))


@given(items, st.sampled_from(SORTS))
def test_an_items_cursor_names_its_own_key(item: dict[str, Any], sort: Sort) -> None:
    key = data_api.key_of(item, sort)
    text = data_api.encode(key, sort)
    assert PATTERN.fullmatch(text), text
    assert data_api.decode(text, sort) == key
    if sort != "last":  # its shape says the order, but `last` and `chat` look alike
        assert data_api.encode(key) == text


@given(
    st.lists(items, min_size=2, max_size=8, unique_by=lambda i: (i["slot"], i["id"])),
    st.sampled_from(SORTS),
)
def test_after_an_items_cursor_come_exactly_the_items_after_it(
    batch: list[dict[str, Any]], sort: Sort
) -> None:
    """The oracle: the list sorted by hand in the order's direction."""
    down = data_api.descending(sort)
    ordered = sorted(batch, key=lambda i: data_api.key_of(i, sort), reverse=down)
    for n, item in enumerate(ordered):
        cursor = data_api.decode(data_api.encode(data_api.key_of(item, sort), sort), sort)
        following = [i for i in batch if data_api.after(data_api.key_of(i, sort), cursor, sort)]
        rest = sorted(following, key=lambda i: data_api.key_of(i, sort), reverse=down)
        assert rest == ordered[n + 1 :]


def test_a_timestamp_just_over_a_ten_thousandth_keeps_its_cursor_in_the_schema() -> None:
    """repr writes 0.00010000000000000002 with 20 digits after the point (found by the
    property test above): its cursor must be one the schema admits."""
    for sort in SORTS:
        key = data_api.decode("0.00010000000000000002_0_z_A1_1", sort)
        assert PATTERN.fullmatch(data_api.encode(key, sort))
