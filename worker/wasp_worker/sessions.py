"""The sessions of one worker: range check, capacity, bounded initialisation.

A session counts against `max_active` from the moment it starts (init, QR,
ready) until it is stopped; at most `max_init` initialise at the same time.
No session starts unless the shard's lease is held. When it is lost, every
session stops and the CONNECTED ones are remembered, to resume from their
stored auth once the lease is held again.
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
    wanted: set[Slot] = field(default_factory=set)  # CONNECTED when the lease was lost
    _init_gate: asyncio.Semaphore = field(init=False)
    _suspending: asyncio.Lock = field(init=False)

    def __post_init__(self) -> None:
        self._init_gate = asyncio.Semaphore(self.config.max_init)
        self._suspending = asyncio.Lock()

    @property
    def active(self) -> int:
        return len(self.states)

    @property
    def holds_lease(self) -> bool:
        return self.lease is None or self.lease.held

    def _not_owner(self) -> NotOwner:
        assert self.lease is not None
        return NotOwner(f"{self.lease.describe()}: {self.lease.reason}")

    def own(self, text: str) -> Slot:
        """Parse a slot from a request, check this worker serves it and holds the lease."""
        try:
            slot = Slot.parse(text)
        except SlotError as error:
            raise BadRequest(str(error)) from None
        if slot not in self.config.slots:
            raise SlotNotInWorker()
        if not self.holds_lease:
            raise self._not_owner()
        return slot

    async def connect(self, slot: Slot) -> SessionState:
        """Start the slot's session (idempotent); refuse past `max_active`."""
        if not self.holds_lease:
            raise self._not_owner()
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
        if not self.holds_lease:  # lost while starting: the watchdog may have missed this one
            await self.backend.stop(slot)
            self.states.pop(slot, None)
            raise self._not_owner()
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

    async def suspend_all(self) -> list[Slot]:
        """Close every session (the lease is lost: another worker may own them soon),
        remembering the CONNECTED ones for `resume`; idempotent."""
        async with self._suspending:  # the watchdog and the renew loop may both call it
            return await self._suspend_all()

    async def _suspend_all(self) -> list[Slot]:
        stopped = list(self.states)
        for slot in stopped:
            state = self.states.get(slot)
            if state is not None and state.status == "CONNECTED":
                self.wanted.add(slot)
            await self.backend.stop(slot)
            self.states.pop(slot, None)
        return stopped

    async def resume(self) -> list[Slot]:
        """Reconnect the sessions `suspend_all` stopped, from their stored auth."""
        resumed = []
        for slot in sorted(self.wanted):
            try:
                await self.connect(slot)
            except NotOwner:
                break  # lost again: they stay wanted
            except Exception as error:
                self.log.emit("session_resume_failed", slot=str(slot), error=type(error).__name__)
            else:
                resumed.append(slot)
            self.wanted.discard(slot)
        return resumed

    async def logout(self, slot: Slot) -> None:
        if slot not in self.states:
            raise NoSession(str(slot))
        await self.backend.logout(slot)
        self.states.pop(slot, None)
