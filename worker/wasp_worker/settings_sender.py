"""Chat settings the API set, to WhatsApp: at the PATCH when the session is connected,
else kept (`pending_settings`) and sent when it connects.

`patched` sends a PATCH's pin, archive and mute (the store recorded them pending in the
PATCH's transaction) and settles their record by the outcome: `sent` marks them sent,
`failed` forgets them (WhatsApp refused: the answer says so), and a session that is not
connected keeps them: the answer is `pending`.

`flush(slot)` sends the slot's pending ones, one send per chat and time set, through
the same `SessionManager.send_chat_settings` path. Each backend calls it
(`before_settings_read`) when the session connects and before it reads the phone's
settings back, so that WhatsApp has the API's values first; while a row is pending the
read-back does not overwrite it in the store either (`pending_settings.screen`). A failed
send is tried again after `retry_s`, doubling, `attempts` times in all (counted in the
row: a restart does not start over); after the last one the row is dropped and
`wa_chat_settings_failed` logged with the attempts. One flush per slot at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from wasp.slots import Slot
from wasp_worker.events import EventLog
from wasp_worker.pending_settings import FIELDS, PendingSettings
from wasp_worker.sessions import SessionManager, WhatsAppOutcome

RETRY_S = 5.0  # the first retry's wait after a failed send; doubled each time
ATTEMPTS = 5  # sends of a pending setting in all before it is dropped


class SettingsSender:
    def __init__(
        self,
        pending: PendingSettings,
        sessions: SessionManager,
        log: EventLog,
        retry_s: float = RETRY_S,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.pending = pending
        self.sessions = sessions
        self.log = log
        self.retry_s = retry_s
        self.attempts = attempts
        self._locks: dict[Slot, asyncio.Lock] = {}
        self._retries: dict[Slot, asyncio.Task[None]] = {}

    async def patched(
        self,
        slot: Slot,
        chat_id: str,
        settings: Mapping[str, Any],
        at: float | None,
        last_message_at: float | None,
    ) -> WhatsAppOutcome | None:
        """Send a PATCH's settings, recorded pending at `at` (None: not recorded); the
        PATCH answer's `whatsapp`."""
        told = await self.sessions.send_chat_settings(slot, chat_id, settings, last_message_at, at)
        names = [name for name in FIELDS if name in settings]
        if at is None or told is None or not names:
            return told
        if told == "sent":
            await self.pending.settle(slot, chat_id, names, at)
        elif told == "not_connected":
            return "pending"
        else:
            await self.pending.forget(slot, chat_id, names, at)
        return told

    async def flush(self, slot: Slot) -> None:
        """Send the slot's pending settings (a backend's `before_settings_read`); never
        raises: a backend's connect goes on whatever becomes of them."""
        try:
            async with self._locks.setdefault(slot, asyncio.Lock()):
                await self._flush(slot)
        except Exception as error:
            self.log.emit(
                "wa_chat_settings_flush_failed", slot=str(slot), error=type(error).__name__
            )

    async def _flush(self, slot: Slot) -> None:
        for item in await self.pending.waiting(slot):
            names = list(item.values)
            outcome, reason = await self.sessions.tell_chat_settings(
                slot, item.chat_id, item.change, item.last_message_at
            )
            if outcome == "not_connected":
                return  # the next connect sends them
            if outcome == "sent":
                await self.pending.settle(slot, item.chat_id, names, item.set_at)
                self.log.emit(
                    "wa_chat_settings_sent", slot=str(slot), chat_id=item.chat_id, pending=True
                )
                continue
            attempts = await self.pending.fail(slot, item.chat_id, names, item.set_at)
            if outcome == "failed" and attempts < self.attempts:
                self.log.emit(
                    "wa_chat_settings_retry",
                    slot=str(slot),
                    chat_id=item.chat_id,
                    reason=reason,
                    attempts=attempts,
                )
                self._retry(slot, self.retry_s * 2 ** (attempts - 1))
                continue
            await self.pending.forget(slot, item.chat_id, names, item.set_at)
            self.log.emit(
                "wa_chat_settings_failed",
                slot=str(slot),
                chat_id=item.chat_id,
                reason=reason or outcome,
                attempts=attempts,
            )

    async def unlinked(self, slot: Slot) -> None:
        """The slot's account went (`SessionManager.on_unlinked`): its settings were for that
        account, not for whichever is linked there next; dropped, retries with them."""
        waiting = self._retries.pop(slot, None)
        if waiting is not None:
            waiting.cancel()
        dropped = await self.pending.drop_slot(slot)
        if dropped:
            self.log.emit("wa_chat_settings_dropped", slot=str(slot), records=dropped)

    def _retry(self, slot: Slot, delay: float) -> None:
        """Flush the slot again after `delay`; one retry waits per slot (the earliest)."""
        waiting = self._retries.get(slot)
        if waiting is not None and not waiting.done():
            return

        async def again() -> None:
            await asyncio.sleep(delay)
            self._retries.pop(slot, None)  # this flush may need the next retry
            await self.flush(slot)

        self._retries[slot] = asyncio.create_task(again())

    async def close(self) -> None:
        for task in self._retries.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._retries.clear()
