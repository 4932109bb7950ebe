"""Keyset cursors of the data API, shared by the worker and the master.

A page ends at its last item; the cursor handed out is that item's sort key, and
the next page is "the items strictly after this key". Unlike an offset, such a
position stays right while items are added, removed or move: an item is never
shown twice because others were inserted before it.

Every item carries `slot` and its row `id`, and every key ends with them (the
`time` key of search hits is just (id, slot): ids follow time), so a key is
unique across the shards: the master merges the shards' pages by the
same `key_of` and hands out one cursor, the key of the last item it returned;
each worker then answers "after this key" for its own slots.

One cursor shape serves every order (the query's schema cannot tie a cursor's
shape to the `sort` sent with it): `<timestamp>_<unread>_<name>_<slot>_<id>`,
each order reading the fields it sorts by. `<name>` is `z` (no name: after every
name) or `h` and the name's UTF-8 in hex. `CURSOR_PATTERN` admits only strings
that decode, so any cursor a client can send that passes the schema is a
position (perhaps one no item has: the page then starts at the next item), and
never a 400.
"""

from __future__ import annotations

import math
from typing import Any, Literal

# The most of a name a cursor holds: a longer one is cut, and its page may then start
# with items of the same cut name again (names are chat subjects and push names, far
# shorter).
NAME_BYTES = 1024
MAX_ID = 2**63 - 1

# A cursor of a keyed listing (conversations, messages, search). The timestamp is a float
# as `repr` writes it: up to 17 significant digits, and below 0.001 up to 3 zeros before
# them (0.000123...), so up to 20 after the point.
CURSOR_PATTERN = (
    r"^[0-9]{1,17}(\.[0-9]{1,20})?(e[+-][0-9]{1,3})?_[0-9]{1,9}_(z|h([0-9a-f]{2}){0,"
    + str(NAME_BYTES)
    + r"})_[A-Z]{1,8}[0-9]{1,9}_[0-9]{1,19}$"
)

# `last`: latest message first; `unread`: most unread first, then latest; `name`: by
# name, nameless last; `chat`: a chat's messages by timestamp; `time`: search hits by
# message id, which is time-ordered (`wasp_worker.message_ids`), newest first.
Sort = Literal["last", "unread", "name", "chat", "time"]
# The orders read from the largest key down (the rest from the smallest up). Messages of a
# chat page both ways: `before` a cursor newest first, `after` it oldest first.
DESCENDING: frozenset[str] = frozenset({"last", "unread"})

Key = tuple[Any, ...]
# A key of the `chat` order: (timestamp, slot, id).
ChatKey = tuple[float, str, int]
# A key of the `time` order: (id, slot). A shard's ids are unique, so its hits in id
# order are in this order too, and the master merges the shards' pages by it.
TimeKey = tuple[int, str]

# A message's id is its timestamp in whole milliseconds times ID_SPAN, plus
# a number for the messages of that millisecond in the order they were stored. Id order is
# then time order to the millisecond, ties by arrival.
ID_SPAN = 4096


def stamp_of_id(row: int) -> float:
    """The time (seconds, to the millisecond) a message id stands for."""
    return (row // ID_SPAN) / 1000


def key_of(item: dict[str, Any], sort: Sort) -> Key:
    """The item's position in `sort` order: a conversation for last/unread/name (its
    `last_timestamp`, `unread`, `name`), a message for `chat` (its `timestamp`) and
    `time` (its `id`)."""
    if sort == "time":
        return (int(item["id"]), str(item["slot"]))
    tail = (str(item["slot"]), int(item["id"]))
    if sort == "chat":
        return (float(item["timestamp"]), *tail)
    last = float(item.get("last_timestamp") or 0.0)
    if sort == "last":
        return (last, *tail)
    if sort == "unread":
        return (int(item["unread"]), last, *tail)
    name = item.get("name")
    return (name is None, name or "", *tail)


def descending(sort: Sort) -> bool:
    """Whether pages of `sort` go from the largest key down (`sorted(..., reverse=...)`)."""
    return sort in DESCENDING


def _stamp(value: float) -> str:
    """A timestamp exactly: the shortest text that reads back as the same float (a
    negative or infinite one, never a real timestamp, is 0: a position all the same)."""
    if not math.isfinite(value) or value <= 0:
        return "0.0"
    return repr(float(value))


def encode(key: Key, sort: Sort | None = None) -> str:
    """The cursor of a key `key_of` made (`sort` may be left out: the key's shape says)."""
    if sort is None:
        sort = _shape(key)
    if sort == "time":
        # The timestamp field says the id's millisecond, for a reader: the id alone counts.
        row, slot = key
        return f"{_stamp(stamp_of_id(row))}_0_z_{slot}_{row}"
    slot, row = key[-2], key[-1]
    stamp, unread, name = 0.0, 0, None
    if sort in ("chat", "last"):
        stamp = key[0]
    elif sort == "unread":
        unread, stamp = key[0], key[1]
    else:
        name = None if key[0] else key[1]
    named = "z" if name is None else "h" + name.encode()[:NAME_BYTES].hex()
    return f"{_stamp(stamp)}_{unread}_{named}_{slot}_{row}"


def _shape(key: Key) -> Sort:
    if len(key) == 2:
        return "time"
    if len(key) == 3:
        return "chat"  # (or `last`: the same fields, the same cursor)
    return "name" if isinstance(key[1], str) else "unread"


def decode(text: str, sort: Sort) -> Key:
    """The key a cursor names, for `sort`; ValueError for a string `CURSOR_PATTERN`
    refuses (the schema already refused it)."""
    parts = text.split("_")
    if len(parts) != 5:
        raise ValueError("not a cursor")
    stamp_text, unread_text, named, slot, row_text = parts
    # Ids are SQLite's 64-bit integers: a larger number is the last place there is.
    stamp, unread, row = float(stamp_text), int(unread_text), min(int(row_text), MAX_ID)
    if sort == "time":
        return (row, slot)
    if sort in ("chat", "last"):
        return (stamp, slot, row)
    if sort == "unread":
        return (unread, stamp, slot, row)
    if named == "z":
        return (True, "", slot, row)
    # Any hex the pattern admits is a name; bytes that are not UTF-8 still name a place.
    return (False, bytes.fromhex(named[1:]).decode("utf-8", "replace"), slot, row)


def after(key: Key, cursor: Key, sort: Sort, reverse: bool | None = None) -> bool:
    """Whether `key` comes strictly after `cursor` in `sort` order (`reverse` overrides
    the order's direction, as messages paged `after` a cursor do)."""
    down = descending(sort) if reverse is None else reverse
    return key < cursor if down else key > cursor
