"""Message ids that follow time, so that id order is time order.

A message's id is its timestamp in whole milliseconds times `ID_SPAN` (4096), plus
the next number in that millisecond: messages of one millisecond are numbered in
the order they are stored. Ordering by id is then ordering by time to the
millisecond, ties by arrival, whenever a message arrives (a history import
stores old messages late, each still lands at its time). That is what lets a
full-text search read FTS5's index in rowid order and stop after a page.

The number is found with one seek of the primary key (the largest id of that
millisecond). A millisecond holds 4096 messages; should one ever hold more (a
single phone cannot produce them), the next ones spill into the following
millisecond's numbers, ordered as if stored a millisecond later: ids stay unique,
only that order is off by a millisecond. Numbers freed by a deletion are not
reused: the next message of that millisecond still comes after the others.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator

from wasp.data_api import ID_SPAN, MAX_ID

# The last millisecond whose ids fit SQLite's 64-bit integers (year 71000 and more: a
# later timestamp is no real one and files there).
LAST_MS = MAX_ID // ID_SPAN - 1


def millisecond(timestamp: float) -> int:
    """The timestamp's whole millisecond (a negative or non-finite one, never real, is 0)."""
    if not math.isfinite(timestamp) or timestamp <= 0:
        return 0
    return min(math.floor(timestamp * 1000), LAST_MS)


def next_id(db: sqlite3.Connection, timestamp: float) -> int:
    """The id of a message of `timestamp` stored now, in the caller's transaction."""
    ms = millisecond(timestamp)
    while True:
        base = ms * ID_SPAN
        (top,) = db.execute(
            "SELECT max(id) FROM messages WHERE id BETWEEN ? AND ?", (base, base + ID_SPAN - 1)
        ).fetchone()
        if top is None:
            return base
        if top < base + ID_SPAN - 1:
            return int(top) + 1
        ms += 1  # this millisecond is full: spill into the next


def in_time_order(rows: Iterable[tuple[float, int]]) -> Iterator[tuple[int, int]]:
    """(id, row) for rows given as (timestamp, row) in time order (ties in the order
    stored): each its millisecond's next number, spilling as `next_id` does."""
    previous = -1
    for stamp, row in rows:
        previous = max(millisecond(float(stamp)) * ID_SPAN, previous + 1)
        yield previous, row
