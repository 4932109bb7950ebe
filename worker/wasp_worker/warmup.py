"""Warm-up after listen: which slots to start, in which order (pure), and starting them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasp.slots import Slot, SlotError, SlotRange


@dataclass(frozen=True)
class WarmupPlan:
    start: list[Slot]
    disabled: list[Slot]
    capacity_left: int


def plan(
    roles: list[dict[str, Any]],
    accounts: list[dict[str, Any]],
    slots: SlotRange,
    active: int,
    max_active: int,
    limit: int,
) -> WarmupPlan:
    """Bound slots in range, enabled, in slot order, at most min(max_active - active, limit)."""
    bound: set[Slot] = set()
    for role in roles:
        try:
            slot = Slot.parse(role.get("boundSlot"))
        except SlotError:
            continue
        if slot in slots:
            bound.add(slot)
    enabled = set()
    for account in accounts:
        if account.get("enabled") is True:
            try:
                enabled.add(Slot.parse(account.get("slot")))
            except SlotError:
                continue
    room = max(0, min(max_active - active, limit))
    ordered = sorted(bound)
    return WarmupPlan(
        start=[s for s in ordered if s in enabled][:room],
        disabled=[s for s in ordered if s not in enabled],
        capacity_left=room,
    )


def read_list(path: Path) -> list[dict[str, Any]]:
    """A JSON array of objects from the shared config; missing or broken files give []."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
