"""Drains the outbound queue: sends due messages of CONNECTED sessions, one slot at a time.

A message is only ever sent while its session is CONNECTED and the shard's
lease is held (checked before each send: the lease can run out mid-batch); a final refusal
marks it `failed` with the backend's reason; any other error leaves it queued
for the next round (the row's fixed message id makes the retry the same message).
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from wasp.slots import Slot
from wasp_worker.backends.base import SendFailed
from wasp_worker.events import EventLog
from wasp_worker.history import History
from wasp_worker.queue import Outbound, OutboundQueue
from wasp_worker.sessions import SessionManager

IDLE_S = 0.2


class OutboundRunner:
    def __init__(
        self,
        queue: OutboundQueue,
        sessions: SessionManager,
        log: EventLog,
        registry: CollectorRegistry,
        history: History | None = None,
    ) -> None:
        self.queue, self.sessions, self.log, self.history = queue, sessions, log, history
        self.sent = Counter(
            "wasp_worker_messages_sent_total", "Outbound messages sent.", registry=registry
        )
        self.failed = Counter(
            "wasp_worker_messages_failed_total",
            "Outbound messages that ended failed.",
            registry=registry,
        )
        self.depth = Gauge(
            "wasp_worker_queue_depth", "Outbound messages waiting to be sent.", registry=registry
        )
        self.wake = asyncio.Event()

    def _announce(self, message: Outbound, state: str, reason: str | None) -> None:
        """A message's final state, live to the front-end (ids only, never the body)."""
        if self.sessions.link is not None:
            self.sessions.link.emit(
                "wa:message_status",
                {
                    "slot": message.slot,
                    "id": message.id,
                    "waMessageId": message.wa_message_id,
                    "to": message.destination,
                    "state": state,
                    "reason": reason,
                },
            )

    async def run(self) -> None:
        while True:
            connected = [
                str(slot)
                for slot, state in self.sessions.states.items()
                if state.status == "CONNECTED" and self.sessions.holds_lease
            ]
            self.depth.set(await self.queue.depth())
            batch = await self.queue.due(connected)
            for message in batch:
                if not self.sessions.holds_lease:
                    break  # the rest stay queued for whoever holds it next
                try:
                    await self.sessions.backend.send(Slot.parse(message.slot), message)
                except SendFailed as refusal:
                    await self.queue.finish(message.id, "failed", refusal.reason)
                    self.failed.inc()
                    self.log.emit(
                        "message_failed", slot=message.slot, id=message.id, reason=refusal.reason
                    )
                    self._announce(message, "failed", refusal.reason)
                except Exception as error:
                    self.log.emit(
                        "message_send_error",
                        slot=message.slot,
                        id=message.id,
                        error=type(error).__name__,
                    )
                else:
                    await self.queue.finish(message.id, "sent", None)
                    self.sent.inc()
                    if self.history is not None:
                        await self.history.record(Slot.parse(message.slot), "out", _sent(message))
                    self._announce(message, "sent", None)
            if not batch:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), IDLE_S)


def _sent(message: Outbound) -> dict[str, object]:
    """A sent message in the shape of the history's records."""
    return {
        "wa_message_id": message.wa_message_id,
        "chat_id": message.destination,
        "from": message.slot,
        "body": message.body,
        "media_type": None if message.kind == "text" else message.kind,
        "media_url": message.media_url,
    }
