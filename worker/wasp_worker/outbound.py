"""Drains the outbound queue: one lane per session, lanes side by side.

A lane sends its account's messages one at a time, the next message of each
chat in queue order (`OutboundQueue.heads`: a chat's later message never
leaves before an earlier one has been sent or has failed). Lanes run
concurrently, at most `concurrency` sends in flight across the shard, so a
slow or stuck session delays only its own messages; a send that takes longer
than `timeout_s` counts as a transient failure.

A message is only ever sent while its session is CONNECTED and the shard's
lease is held (checked right before each send). The account's pace
(`pacer`) holds a message until both of its buckets have a token: held, it
simply stays `queued`. A final refusal (`SendFailed`) marks it `failed` with the
backend's reason; any other error is transient: the message stays queued with
its attempt count and the error as its reason, and is tried again after a
backoff with full jitter (`retry_delay`), until `max_attempts` or `max_age_s`
after its first failure end it `failed` with the last reason. The row's fixed
message id makes every retry the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from wasp.contract import WorkerEnv
from wasp.slots import Slot
from wasp.waiting import wait_set
from wasp_worker.backends.base import SendFailed
from wasp_worker.events import EventLog
from wasp_worker.pacer import Pacer
from wasp_worker.queue import Outbound, OutboundQueue
from wasp_worker.sessions import SessionManager

IDLE_S = 0.2  # how often the dispatcher looks for slots with due messages
MAX_NAP_S = 5.0  # a waiting lane looks at its queue again at least this often
STOP_GRACE_S = 10.0  # on shutdown, sends in flight may finish (and be recorded) this long
REASON_LENGTH = 200


@dataclass(frozen=True)
class SendSettings:
    concurrency: int
    max_attempts: int
    max_age_s: float
    retry_base_s: float
    retry_cap_s: float
    timeout_s: float

    @classmethod
    def of(cls, env: WorkerEnv) -> SendSettings:
        return cls(
            concurrency=env.send_concurrency,
            max_attempts=env.send_max_attempts,
            max_age_s=env.send_max_age_s,
            retry_base_s=env.send_retry_base_s,
            retry_cap_s=env.send_retry_cap_s,
            timeout_s=env.send_timeout_s,
        )


def retry_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds before try `attempt + 1` after `attempt` failed ones: full jitter, uniform up
    to min(cap, base * 2^(attempt - 1)), with a floor of a tenth of that so that no draw
    makes a hot loop. The ceiling doubles with each failure; the spread keeps accounts
    that failed together from retrying together."""
    ceiling = min(cap_s, base_s * 2 ** min(attempt - 1, 62))
    return rng.uniform(ceiling / 10, ceiling)


def failure_reason(error: BaseException) -> str:
    """A transient error as the row's reason: its type, and its text if it has one."""
    text = str(error).strip()
    reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return reason[:REASON_LENGTH]


class OutboundRunner:
    def __init__(
        self,
        queue: OutboundQueue,
        sessions: SessionManager,
        log: EventLog,
        registry: CollectorRegistry,
        *,
        settings: SendSettings | None = None,
        pacer: Pacer | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.queue, self.sessions, self.log = queue, sessions, log
        self.settings = settings or SendSettings.of(sessions.config)
        self.pacer = pacer or Pacer(sessions.config.shard_pacing())
        for slot, override in queue.pacing_overrides().items():  # the accounts' own, kept
            self.pacer.override(slot, override)
        self.clock = clock  # wall time: what `not_before` on the rows is compared with
        self.rng = rng or random.Random()
        self.gate = asyncio.Semaphore(self.settings.concurrency)
        self.lanes: dict[str, asyncio.Task[None]] = {}
        self._pokes: dict[str, asyncio.Event] = {}
        self._stopping = False
        self.sent = Counter(
            "wasp_worker_messages_sent_total", "Outbound messages sent.", registry=registry
        )
        self.failed = Counter(
            "wasp_worker_messages_failed_total",
            "Outbound messages that ended failed.",
            registry=registry,
        )
        self.retried = Counter(
            "wasp_worker_send_retries_total",
            "Transient send failures, each followed by a retry after a backoff.",
            registry=registry,
        )
        self.depth = Gauge(
            "wasp_worker_queue_depth", "Outbound messages waiting to be sent.", registry=registry
        )
        self.lane_count = Gauge(
            "wasp_worker_send_lanes", "Sessions with messages being sent now.", registry=registry
        )
        self.lane_count.set_function(lambda: len(self.lanes))
        self.wake = asyncio.Event()

    def _announce(self, message: Outbound, state: str, reason: str | None) -> None:
        """A message's final state, live to the front-end (ids only, never the body)."""
        if self.sessions.link is not None:
            self.sessions.link.emit("wa:message_status", message.status(state, reason))

    def _connected(self, slot: Slot) -> bool:
        state = self.sessions.states.get(slot)
        return state is not None and state.status == "CONNECTED" and self.sessions.holds_lease

    async def run(self) -> None:
        """Start a lane for each CONNECTED slot with a due message that has none running."""
        try:
            while True:
                connected = [str(slot) for slot in self.sessions.states if self._connected(slot)]
                self.depth.set(await self.queue.depth())
                for slot in await self.queue.due_slots(connected, self.clock()):
                    if slot not in self.lanes:
                        self.lanes[slot] = asyncio.create_task(self._lane(slot))
                self.wake.clear()
                if await wait_set(self.wake, IDLE_S):
                    for poke in self._pokes.values():  # a new message may be sendable now
                        poke.set()
        finally:
            # A send cut off between WhatsApp's acceptance and its commit here would be
            # sent again by the next worker: let the ones in flight finish, start no more.
            self._stopping = True
            for poke in self._pokes.values():
                poke.set()
            lanes = list(self.lanes.values())
            if lanes:
                await asyncio.wait(lanes, timeout=min(STOP_GRACE_S, self.settings.timeout_s))
            for lane in lanes:
                lane.cancel()
            for lane in lanes:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane
            self.lanes.clear()

    async def _lane(self, name: str) -> None:
        """One account's messages, one at a time, until none is due or it disconnects."""
        slot = Slot.parse(name)
        poke = self._pokes[name] = asyncio.Event()
        try:
            while self._connected(slot) and not self._stopping:
                heads = await self.queue.heads(name, self.clock())
                if not heads:
                    return
                message, wait = self._choose(name, heads)
                if message is None:
                    poke.clear()
                    await wait_set(poke, min(wait, MAX_NAP_S))
                    continue
                async with self.gate:
                    if not self._connected(slot) or self._stopping:
                        return  # the rest stay queued: for this session's return, or the
                        # next lease holder
                    pace_now = self.pacer.clock()
                    if not self.pacer.may_send(name, message.destination, pace_now):
                        continue  # its rules changed meanwhile: choose again
                    self.pacer.take(name, message.destination, pace_now)
                    await self._send(slot, message)
        except Exception as error:  # a lane must not die silently: the dispatcher restarts it
            self.log.emit("send_lane_error", slot=name, error=type(error).__name__)
        finally:
            self.lanes.pop(name, None)
            self._pokes.pop(name, None)

    def _choose(self, slot: str, heads: list[Outbound]) -> tuple[Outbound | None, float]:
        """The oldest chat head that may leave now, or None and how long until one may."""
        now, pace_now = self.clock(), self.pacer.clock()
        soonest = MAX_NAP_S
        ready: Outbound | None = None
        for message in heads:
            wait = max(
                message.not_before - now,
                self.pacer.recipient_wait(slot, message.destination, pace_now),
            )
            if wait <= 0:
                ready = message
                break
            soonest = min(soonest, wait)
        if ready is None:
            return None, soonest
        held = self.pacer.session_wait(slot, pace_now)
        if held > 0:
            return None, held
        return ready, 0.0

    async def _send(self, slot: Slot, message: Outbound) -> None:
        try:
            if message.destination.endswith("@lid"):
                resolved = await self._phone_for(slot, message)
                if resolved is None:
                    return
                message = resolved
            async with asyncio.timeout(self.settings.timeout_s):
                sent_as = await self.sessions.backend.send(slot, message)
        except SendFailed as refusal:
            await self._fail(message, refusal.reason)
        except Exception as error:
            await self._retry_or_fail(message, error)
        else:
            if sent_as and sent_as != message.wa_message_id:
                message = dataclasses.replace(message, wa_message_id=sent_as)
            final = await self.queue.finish(message.id, "sent", None, sent_as=sent_as)
            self.sent.inc()
            self._announce(message, "sent", None)
            if final != "sent":  # its receipt came back before the send call returned
                self._announce(message, final, None)

    async def _phone_for(self, slot: Slot, message: Outbound) -> Outbound | None:
        """A LID the map did not know at enqueue: the map may know it now, else the
        session's own store; neither does: `failed`, lid_without_mapping (None). A session
        that cannot look now raises: a transient failure, retried."""
        lid = message.destination
        phone = await self.queue.phone_for(slot, lid)
        if phone is None:
            phone = await self.sessions.backend.phone_for_lid(slot, lid)
            if phone is not None:
                await self.queue.map_lid(slot, lid, phone)
        if phone is None:
            await self._fail(message, "lid_without_mapping")
            return None
        await self.queue.readdress(message.id, phone)
        return dataclasses.replace(message, destination=phone)

    async def _fail(self, message: Outbound, reason: str) -> None:
        await self.queue.finish(message.id, "failed", reason)
        self.failed.inc()
        self.log.emit("message_failed", slot=message.slot, id=message.id, reason=reason)
        self._announce(message, "failed", reason)

    async def _retry_or_fail(self, message: Outbound, error: Exception) -> None:
        """A transient error: try again later, unless it has been tried enough."""
        attempts, now = message.attempts + 1, self.clock()
        reason = failure_reason(error)
        first_failed = message.first_failed if message.first_failed is not None else now
        settings = self.settings
        if attempts >= settings.max_attempts or now - first_failed >= settings.max_age_s:
            await self._fail(message, reason)
            return
        delay = retry_delay(attempts, settings.retry_base_s, settings.retry_cap_s, self.rng)
        await self.queue.retry(message.id, attempts, now + delay, reason, now)
        self.retried.inc()
        self.log.emit(
            "message_send_error",
            slot=message.slot,
            id=message.id,
            error=type(error).__name__,
            attempt=attempts,
            retryInS=round(delay, 3),
        )
