"""Warm-up once the lease is held: which slots to start, in which order (`plan`, pure),
and starting them (`run_warmup`). It runs until it once ends with the lease held: a
lease lost in the middle leaves the rest for the next time it is held."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from wasp.slots import Slot, SlotError, SlotRange
from wasp_worker.errors import NotOwner
from wasp_worker.state import CONFIG, LOG, SESSIONS


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
    running: frozenset[Slot] = frozenset(),
) -> WarmupPlan:
    """Bound slots in range, enabled, not running already (resumed), in slot order, at most
    min(max_active - active, limit)."""
    bound: set[Slot] = set()
    for role in roles:
        try:
            slot = Slot.parse(role.get("boundSlot"))
        except SlotError:
            continue
        if slot in slots and slot not in running:
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


async def run_warmup(app: web.Application) -> bool:
    """Start the planned slots, one after another; whether it ran to its end with the lease
    held (False: the lease went meanwhile, and the slots it could not start wait for the
    next time it is held)."""
    config, sessions, log = app[CONFIG], app[SESSIONS], app[LOG]
    chosen = plan(
        read_list(config.config_dir / "roles.json"),
        read_list(config.config_dir / "accounts.json"),
        config.slots,
        sessions.active,
        config.max_active,
        config.warmup_limit,
        frozenset(sessions.states),
    )
    for slot in chosen.disabled:
        log.emit("warmup_skip_disabled", slot=str(slot))
    if chosen.capacity_left == 0:
        log.emit("warmup_capacity_full", active=sessions.active, maxActive=config.max_active)
        return sessions.holds_lease
    log.emit("warmup_start", count=len(chosen.start), slots=[str(s) for s in chosen.start])
    ok = fail = 0
    lease_lost = False
    for slot in chosen.start:  # one after another: gentle on WhatsApp
        try:
            await sessions.connect(slot)
            ok += 1
        except NotOwner:
            fail += 1
            lease_lost = True
            log.emit("warmup_slot_failed", slot=str(slot), error="NotOwner")
        except Exception as error:
            fail += 1
            log.emit("warmup_slot_failed", slot=str(slot), error=type(error).__name__)
    log.emit("warmup_done", ok=ok, fail=fail)
    return not lease_lost and sessions.holds_lease
