"""Where a request goes: the routing table of shards and the slot a request names.

Pure: no I/O. The table keeps ranges sorted by (prefix, first number), so a
lookup is a binary search, O(log n) for any number of shards.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

from wasp.slots import Slot, SlotRange

_ACCOUNT_PATH = re.compile(r"^/api/accounts/([^/]+)(?:/|$)")


@dataclass(frozen=True)
class ShardRoute:
    """One shard as the master sees it."""

    id: str
    url: str  # base URL of the worker, e.g. http://w1-0.w1.crm.svc:8080
    slots: SlotRange
    suspended: bool = False
    ready: bool = True

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "from": str(self.slots.first), "to": str(self.slots.last)}


class RoutingTable:
    """Shards by range; replaced or edited as the source (Kubernetes or a file) changes."""

    def __init__(self, routes: list[ShardRoute] | None = None) -> None:
        self._by_id: dict[str, ShardRoute] = {}
        self._sorted: list[ShardRoute] = []
        self._keys: list[tuple[str, int]] = []
        for route in routes or []:
            self._by_id[route.id] = route
        self._index()

    def _index(self) -> None:
        self._sorted = sorted(self._by_id.values(), key=lambda r: (r.slots.first, r.id))
        self._keys = [(r.slots.first.prefix, r.slots.first.number) for r in self._sorted]

    def put(self, route: ShardRoute) -> None:
        self._by_id[route.id] = route
        self._index()

    def remove(self, shard_id: str) -> None:
        if self._by_id.pop(shard_id, None) is not None:
            self._index()

    def get(self, shard_id: str) -> ShardRoute | None:
        return self._by_id.get(shard_id)

    @property
    def routes(self) -> list[ShardRoute]:
        """All shards in slot order."""
        return list(self._sorted)

    def lookup(self, slot: Slot) -> ShardRoute | None:
        """The shard whose range holds the slot, if any."""
        at = bisect.bisect_right(self._keys, (slot.prefix, slot.number)) - 1
        if at < 0:
            return None
        route = self._sorted[at]
        return route if slot in route.slots else None

    def first(self) -> ShardRoute | None:
        """Where requests without a slot go (the first shard in slot order)."""
        return self._sorted[0] if self._sorted else None


def slot_in_path(path: str) -> str | None:
    """The slot text of `/api/accounts/:slot/...`, unparsed."""
    found = _ACCOUNT_PATH.match(path)
    return found.group(1) if found else None


def slot_in_body(body: Any) -> str | None:
    """The body fields that name a slot, in order: `slot`, `boundSlot`, `role.boundSlot`."""
    if not isinstance(body, dict):
        return None
    for value in (body.get("slot"), body.get("boundSlot")):
        if value is not None:
            return str(value)
    role = body.get("role")
    if isinstance(role, dict) and role.get("boundSlot") is not None:
        return str(role["boundSlot"])
    return None
