"""The sessions of one worker: range check, capacity, bounded initialisation.

A session counts against `max_active` from the moment it starts (init, QR,
ready) until it is stopped; at most `max_init` initialise at the same time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from wasp.slots import Slot, SlotError
from wasp_worker.backends.base import Backend, Status, StatusEvent
from wasp_worker.config import WorkerConfig
from wasp_worker.errors import BadRequest, CapacityFull, NoSession, NotOwner, SlotNotInWorker
from wasp_worker.events import EventLog
from wasp_worker.live_feed import LiveFeed
from wasp_worker.ownership import Lease


@dataclass
class SessionState:
    status: Status = "CONNECTING"
    qr: str | None = None


@dataclass
class SessionManager:
    config: WorkerConfig
    backend: Backend
    log: EventLog
    link: LiveFeed | None = None
    lease: Lease | None = None
    states: dict[Slot, SessionState] = field(default_factory=dict)
    _init_gate: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._init_gate = asyncio.Semaphore(self.config.max_init)

    @property
    def active(self) -> int:
        return len(self.states)

    def own(self, text: str) -> Slot:
        """Parse a slot from a request, check this worker serves it and holds the lease."""
        try:
            slot = Slot.parse(text)
        except SlotError as error:
            raise BadRequest(str(error)) from None
        if slot not in self.config.slots:
            raise SlotNotInWorker()
        if self.lease is not None and not self.lease.held:
            raise NotOwner(self.lease.describe())
        return slot

    async def connect(self, slot: Slot) -> SessionState:
        """Start the slot's session (idempotent); refuse past `max_active`."""
        if slot in self.states:
            return self.states[slot]
        if self.active >= self.config.max_active:
            self.log.emit(
                "worker_capacity_full",
                slot=str(slot),
                active=self.active,
                maxActive=self.config.max_active,
            )
            raise CapacityFull()
        state = self.states[slot] = SessionState()
        async with self._init_gate:
            try:
                await self.backend.start(slot, self._on_status)
            except Exception:
                self.states.pop(slot, None)
                raise
        return state

    async def _on_status(self, event: StatusEvent) -> None:
        state = self.states.get(event.slot)
        if state is None:
            return
        state.status = event.status
        state.qr = event.qr if event.status == "CONNECTING" else None
        self.log.emit("wa_status", slot=str(event.slot), status=event.status, reason=event.reason)
        if self.link is not None:
            self.link.emit("wa:status", {"slot": str(event.slot), "status": event.status})
            if event.qr is not None:
                self.link.emit("wa:qr", {"slot": str(event.slot), "qr": event.qr})

    def status(self, slot: Slot) -> dict[str, Any]:
        state = self.states.get(slot)
        if state is None:
            return {"slot": str(slot), "status": "DISCONNECTED", "qr": None}
        return {"slot": str(slot), "status": state.status, "qr": state.qr}

    async def stop(self, slot: Slot) -> None:
        if slot not in self.states:
            raise NoSession(str(slot))
        await self.backend.stop(slot)
        self.states.pop(slot, None)

    async def stop_all(self) -> None:
        """Close every session (the lease was lost: another worker may own them now)."""
        for slot in list(self.states):
            await self.backend.stop(slot)
            self.states.pop(slot, None)

    async def logout(self, slot: Slot) -> None:
        if slot not in self.states:
            raise NoSession(str(slot))
        await self.backend.logout(slot)
        self.states.pop(slot, None)
