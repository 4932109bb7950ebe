"""The sessions of one worker: range check, capacity, bounded initialisation.

A session counts against `max_active` from the moment it starts (init, QR,
ready) until it is stopped; at most `max_init` initialise at the same time.
No session starts unless the shard's lease is held; when it is lost, every
session stops. A session that logged in is *wanted* (`wanted.py`, on the volume)
until it is logged out or destroyed, and `resume` brings the wanted ones back
from their stored auth: after a restart, a crash or a regained lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wasp.slots import Slot, SlotError
from wasp_worker.backends.base import (
    Backend,
    ChatSettingsChange,
    Status,
    StatusEvent,
    SyncsChats,
)
from wasp_worker.config import WorkerConfig
from wasp_worker.errors import BadRequest, CapacityFull, NoSession, NotOwner, SlotNotInWorker
from wasp_worker.events import EventLog
from wasp_worker.live_feed import LiveFeed
from wasp_worker.ownership import Lease
from wasp_worker.wanted import WantedSessions

WhatsAppOutcome = Literal["sent", "pending", "not_connected", "failed", "unsupported"]
"""What became of chat settings set here, for WhatsApp: `sent` (the account's phone and
other devices have them), `pending` (the session is not connected: they are kept and sent
when it connects, `settings_sender`), `not_connected` (not connected, and nothing kept:
only when the store did not record them), `failed` (WhatsApp or the library refused,
logged with the reason), `unsupported` (the backend cannot)."""


@dataclass
class SessionState:
    status: Status = "CONNECTING"
    qr: str | None = None
    reason: str | None = None  # why it is in this state, from what WhatsApp said
    detail: dict[str, Any] | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # init done

    def public(self, slot: Slot) -> dict[str, Any]:
        return {
            "slot": str(slot),
            "status": self.status,
            "qr": self.qr,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class SessionManager:
    config: WorkerConfig
    backend: Backend
    log: EventLog
    link: LiveFeed | None = None
    lease: Lease | None = None
    wanted: WantedSessions | None = None  # None: nothing is remembered (tests of one part)
    states: dict[Slot, SessionState] = field(default_factory=dict)
    # Called with a slot whose WhatsApp account went (logged out here, or unlinked on the
    # phone): what was kept for that account must not reach the next one linked there.
    on_unlinked: list[Callable[[Slot], Awaitable[None]]] = field(default_factory=list)
    # Called with a slot whose session connected, before it counts as CONNECTED (the
    # runner sends only for CONNECTED slots): whose account it is must be settled first.
    on_connected: list[Callable[[Slot], Awaitable[None]]] = field(default_factory=list)
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

    @property
    def syncs_chats(self) -> bool:
        """Whether the backend sends chat settings to WhatsApp at all."""
        return isinstance(self.backend, SyncsChats)

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
            # Starting already (warm-up, resume, another request): answer once it shows
            # its QR or resumed, as a first connect does.
            await self.states[slot].started.wait()
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
            finally:
                state.started.set()
        if not self.holds_lease:  # lost while starting: the watchdog may have missed this one
            await self.backend.stop(slot)
            self.states.pop(slot, None)
            raise self._not_owner()
        return state

    async def _on_status(self, event: StatusEvent) -> None:
        state = self.states.get(event.slot)
        if state is None:
            return
        if event.status == "CONNECTED":
            for hook in self.on_connected:  # before the status: see `on_connected`
                await hook(event.slot)
        state.status = event.status
        state.qr = event.qr if event.status == "CONNECTING" else None
        state.reason = event.reason
        state.detail = dict(event.detail) if event.detail else None
        if self.wanted is not None:
            if event.status == "CONNECTED":
                await self.wanted.add(event.slot)  # logged in: wanted until logout or destroy
            elif event.logged_out:
                await self.wanted.discard(event.slot)  # unlinked: only a new login helps
        if event.logged_out:
            await self._unlinked(event.slot)
        self.log.emit(
            "wa_status",
            slot=str(event.slot),
            status=event.status,
            reason=event.reason,
            detail=state.detail,
        )
        if self.link is not None:
            public = state.public(event.slot)
            del public["qr"]  # wa:qr carries it
            self.link.emit("wa:status", public)
            if event.qr is not None:
                self.link.emit("wa:qr", {"slot": str(event.slot), "qr": event.qr})

    def status(self, slot: Slot) -> dict[str, Any]:
        state = self.states.get(slot)
        if state is None:
            return SessionState("DISCONNECTED").public(slot)
        return state.public(slot)

    async def stop(self, slot: Slot) -> None:
        """Destroy: stop the session, keep its auth, and no longer bring it back by itself."""
        if slot not in self.states:
            raise NoSession(str(slot))
        await self.backend.stop(slot)
        self.states.pop(slot, None)
        if self.wanted is not None:
            await self.wanted.discard(slot)

    async def suspend_all(self) -> list[Slot]:
        """Close every session (the lease is lost: another worker may own them soon); they
        stay wanted, for `resume`. Idempotent."""
        async with self._suspending:  # the watchdog and the renew loop may both call it
            stopped = list(self.states)
            for slot in stopped:
                await self.backend.stop(slot)
                self.states.pop(slot, None)
            return stopped

    async def resume(self) -> list[Slot]:
        """Bring the wanted sessions back from their stored auth: within `max_active`, at
        most `max_init` initialising at once (the init gate); the ones that came back."""
        if self.wanted is None:
            return []
        pending = [s for s in self.wanted if s not in self.states and s in self.config.slots]
        room = max(0, self.config.max_active - self.active)
        if len(pending) > room:
            self.log.emit(
                "resume_capacity_full",
                skipped=[str(s) for s in pending[room:]],
                maxActive=self.config.max_active,
            )
        chosen = pending[:room]
        came_back = await asyncio.gather(*(self._resume_one(slot) for slot in chosen))
        return [slot for slot, ok in zip(chosen, came_back, strict=True) if ok]

    async def _resume_one(self, slot: Slot) -> bool:
        try:
            await self.connect(slot)
        except NotOwner:
            return False  # lost again: it stays wanted for the next holder
        except Exception as error:
            self.log.emit("session_resume_failed", slot=str(slot), error=type(error).__name__)
            return False
        return True

    async def send_chat_settings(
        self,
        slot: Slot,
        chat_id: str,
        settings: Mapping[str, Any],
        last_message_at: float | None = None,
        at: float | None = None,
    ) -> WhatsAppOutcome | None:
        """Tell WhatsApp the pin, archive and mute that `settings` (a conversation PATCH's
        body, set at `at`) sets on a chat, after the store has them; None when it sets none
        of them (tags only). `last_message_at`: the chat's last message's time (an archive
        names it). A refusal is logged (`wa_chat_settings_failed`)."""
        change = ChatSettingsChange.of(settings, at)
        if not change:
            return None
        outcome, reason = await self.tell_chat_settings(slot, chat_id, change, last_message_at)
        if outcome == "failed":
            self.log.emit("wa_chat_settings_failed", slot=str(slot), chat_id=chat_id, reason=reason)
        elif outcome == "sent":
            self.log.emit("wa_chat_settings_sent", slot=str(slot), chat_id=chat_id)
        return outcome

    async def tell_chat_settings(
        self,
        slot: Slot,
        chat_id: str,
        change: ChatSettingsChange,
        last_message_at: float | None,
    ) -> tuple[WhatsAppOutcome, str | None]:
        """Send one chat's settings through the backend's `send_chat_settings`, unlogged:
        the outcome, and for `failed` the reason."""
        backend = self.backend
        if not isinstance(backend, SyncsChats):
            return "unsupported", None
        state = self.states.get(slot)
        if state is None or state.status != "CONNECTED":
            return "not_connected", None
        try:
            await backend.send_chat_settings(slot, chat_id, change, last_message_at)
        except Exception as error:
            reason = str(error) if isinstance(error, RuntimeError) else type(error).__name__
            if reason == "not_connected":
                return "not_connected", None
            return "failed", reason
        return "sent", None

    async def logout(self, slot: Slot) -> None:
        if slot not in self.states:
            raise NoSession(str(slot))
        await self.backend.logout(slot)
        self.states.pop(slot, None)
        if self.wanted is not None:
            await self.wanted.discard(slot)
        await self._unlinked(slot)

    async def _unlinked(self, slot: Slot) -> None:
        for hook in self.on_unlinked:
            await hook(slot)
