"""Delivering the outbox: one lane per (consumer, slot), lanes concurrent.

A lane takes its consumer's next event of its slot, and only that one, until
it is done with it: delivered, not wanted, or a dead letter. So each consumer
receives each slot's events in the order they were added, at least once, and
a receiver that is slow or down holds back only its own lanes: every attempt
is bounded by the HTTP timeouts, and at most `per_consumer` of one consumer's
attempts (and `concurrency` in all) run at once.

A lane reads its events a page at a time (`page`, 16) from its position and
sends them one after another; that an event is done is written in the
background, many lanes' moves in one transaction (`Outbox.done`), so a lane
does not wait for the disk between two events. Marked only after the 2xx: a
crash in between sends the event again, as at-least-once allows.

A failed attempt is retried after a delay drawn with full jitter from
[0, min(cap, base * 2^attempts)) (or the receiver's `Retry-After`), until the
event is older than the horizon (24 h by default); then it is a dead letter.
Time and randomness come in as a `Clock` and a `random.Random`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from wasp.waiting import wait_set
from wasp_worker.events import EventLog
from wasp_worker.webhooks.outbox import Outbox, Stored
from wasp_worker.webhooks.sinks import Outcome, Sink


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    cap_s: float = 3600.0
    horizon_s: float = 86400.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempts-1)))."""
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempts - 1, 60)))


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "wasp_webhook_attempts", "Delivery attempts.", ["subscription"], registry=registry
        )
        self.delivered = Counter(
            "wasp_webhook_delivered", "Events delivered.", ["subscription"], registry=registry
        )
        self.failures = Counter(
            "wasp_webhook_failures",
            "Failed attempts, by reason (http_<status>, timeout, connect, unsafe_target).",
            ["subscription", "reason"],
            registry=registry,
        )
        self.oldest = Gauge(
            "wasp_webhook_oldest_undelivered_seconds",
            "Age of the oldest event not yet delivered (0: none waiting).",
            ["subscription"],
            registry=registry,
        )
        self.dead = Gauge(
            "wasp_webhook_dead_letters", "Dead letters kept.", ["subscription"], registry=registry
        )
        self.disabled = Gauge(
            "wasp_webhook_disabled",
            "1 while a subscription is disabled (its receiver answered 410).",
            ["subscription"],
            registry=registry,
        )


def _label(consumer: str) -> str:
    return consumer.partition(":")[2] or consumer


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        sinks: Callable[[], list[Sink]],
        log: EventLog,
        metrics: DeliveryMetrics,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        concurrency: int = 32,
        per_consumer: int = 4,
        poll_s: float = 1.0,
        page: int = 16,
    ) -> None:
        self.outbox = outbox
        self._sinks = sinks
        self._log = log
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.clock = clock or WallClock()
        self._rng = rng or random.Random()
        self._all = asyncio.Semaphore(concurrency)
        self._per_consumer = per_consumer
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._poll_s = poll_s
        self._page = page
        self._wake = asyncio.Event()
        self._lanes: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._current: dict[str, Sink] = {}
        outbox.on_added(self.wake)

    def wake(self) -> None:
        """New events are in the outbox: look now, not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self.sync()
                await wait_set(self._wake, self._poll_s)
                self._wake.clear()
        finally:
            await self.stop()

    async def stop(self) -> None:
        for task in self._lanes.values():
            task.cancel()
        for task in list(self._lanes.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._lanes.clear()
        await self.outbox.flush()

    async def sync(self) -> None:
        """Start a lane for every (consumer, slot) with events waiting; update the gauges."""
        self._current = {sink.consumer: sink for sink in self._sinks()}
        now = self.clock.now()
        for consumer, sink in self._current.items():
            state = await self.outbox.register(consumer)
            label = _label(consumer)
            if state.disabled is not None and state.disabled_for != sink.target:
                await self.outbox.disable(consumer, None, None)  # a new target: try again
                self._log.emit("webhook_enabled", subscription=label, reason="target changed")
                state = await self.outbox.register(consumer)
            backlog = await self.outbox.backlog(consumer)
            oldest = backlog.oldest
            self.metrics.oldest.labels(label).set(0 if oldest is None else max(0, now - oldest))
            self.metrics.dead.labels(label).set(backlog.dead)
            self.metrics.disabled.labels(label).set(0 if state.disabled is None else 1)
            if state.disabled is not None:
                continue
            for slot in backlog.heads:
                key = (consumer, slot)
                if key not in self._lanes or self._lanes[key].done():
                    self._lanes[key] = asyncio.create_task(self._lane(consumer, slot))

    async def idle(self) -> None:
        """Wait until every lane has finished (for tests and draining)."""
        while any(not task.done() for task in self._lanes.values()):
            await asyncio.wait([t for t in self._lanes.values() if not t.done()])

    async def _lane(self, consumer: str, slot: str) -> None:
        label = _label(consumer)
        while True:
            page = await self.outbox.pending(consumer, slot, self._page)
            if not page:
                return
            for event in page:
                sink = self._current.get(consumer)
                if sink is None:
                    return
                if not sink.wants(event):
                    self.outbox.done(consumer, event)
                    continue
                if event.next_at > self.clock.now():
                    await self.clock.sleep(event.next_at - self.clock.now())
                    break
                limit = self._limits.setdefault(consumer, asyncio.Semaphore(self._per_consumer))
                async with self._all, limit:
                    self.metrics.attempts.labels(label).inc()
                    result = await sink.send(event)
                if result.verdict == "delivered":
                    self.metrics.delivered.labels(label).inc()
                    self.outbox.done(consumer, event)
                    continue
                if not await self._failed(consumer, label, sink, event, result):
                    return
                break  # read the lane again: its attempts on this event changed

    async def _failed(
        self, consumer: str, label: str, sink: Sink, event: Stored, result: Outcome
    ) -> bool:
        """Record a failed attempt; False when the lane must stop (its consumer is disabled)."""
        attempts = event.attempts + 1
        self.metrics.failures.labels(label, result.reason).inc()
        fields = {"subscription": label, "slot": event.slot, "event_id": event.id}
        if result.verdict == "disable":
            await self.outbox.retry(consumer, event, attempts, 0, result.reason)
            await self.outbox.disable(consumer, result.reason, sink.target)
            self._log.emit("webhook_disabled", **fields, reason=result.reason)
            return False
        if result.verdict == "dead":
            await self._dead(consumer, event, attempts, result.reason, fields)
            return True
        delay = result.retry_after_s
        if delay is None:
            delay = self.backoff.delay(attempts, self._rng)
        next_at = self.clock.now() + delay
        if next_at > event.created + self.backoff.horizon_s:
            await self._dead(consumer, event, attempts, f"horizon: {result.reason}", fields)
            return True
        await self.outbox.retry(consumer, event, attempts, next_at, result.reason)
        self._log.emit(
            "webhook_retry",
            **fields,
            attempts=attempts,
            reason=result.reason,
            delay_s=round(delay, 3),
        )
        return True

    async def _dead(
        self, consumer: str, event: Stored, attempts: int, reason: str, fields: dict[str, str]
    ) -> None:
        await self.outbox.dead(consumer, event, attempts, reason)
        self._log.emit("webhook_dead_letter", **fields, attempts=attempts, reason=reason)
