"""The sending engine: lanes per session, order per chat, retries with backoff, pacing.

The backend here is a fake that logs every send with the monotonic clock (and can
be slow, hang, or fail): the engine is what is under test. Pacing is checked
against the token-bucket bound stated independently of the code (`conforms`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from wasp_worker.backends.base import CONTENT_KINDS, OnStatus, Outgoing, SendFailed, SendKind
from wasp_worker.events import EventLog
from wasp_worker.outbound import OutboundRunner, SendSettings, failure_reason, retry_delay
from wasp_worker.pacer import Pacer, TokenBucket
from wasp_worker.queue import OutboundQueue
from wasp_worker.sessions import SessionManager, SessionState
from wasp_worker.store import ShardStore

from tests.support.waiting import eventually_async
from tests.worker.test_worker_http import config
from wasp.messages import TextMessage
from wasp.pacing import Pacing, Rate
from wasp.slots import Slot


async def wait_until(check: Callable[[], object], within: float, what: str) -> None:
    """Check again and again on the event loop (the engine runs on it) until true."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.01)


FAST = Pacing(
    session=Rate(perMinute=60_000, burst=1000), recipient=Rate(perMinute=60_000, burst=1000)
)


@dataclass
class Send:
    slot: str
    to: str
    wa_message_id: str
    start: float
    end: float = 0.0
    ok: bool = False


@dataclass
class FakeBackend:
    """Sends take `delay` seconds; `hang` slots never return; `fail(slot, id, attempt)`
    says which error a given attempt raises (None: it goes through)."""

    delay: float = 0.0
    hang: set[str] = field(default_factory=set)
    fail: Callable[[str, str, int], Exception | None] = lambda slot, wa_id, attempt: None
    log: list[Send] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    on_inbound: Any = None
    on_receipt: Any = None
    sends: frozenset[SendKind] = CONTENT_KINDS
    # Like neonize, which cannot choose a message's id: WhatsApp's own comes back.
    assigns_ids: bool = False

    def attempts(self, wa_message_id: str) -> int:
        return sum(1 for s in self.log if s.wa_message_id == wa_message_id)

    async def send(self, slot: Slot, message: Outgoing) -> str | None:
        loop = asyncio.get_running_loop()
        record = Send(str(slot), message.destination, message.wa_message_id, loop.time())
        attempt = self.attempts(message.wa_message_id) + 1
        self.log.append(record)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if str(slot) in self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay)
            error = self.fail(str(slot), message.wa_message_id, attempt)
            if error is not None:
                raise error
            record.ok = True
        finally:
            self.in_flight -= 1
            record.end = loop.time()
        return "3EB0WA" + message.wa_message_id[-10:] if self.assigns_ids else None

    async def start(self, slot: Slot, on_status: OnStatus) -> None:
        raise NotImplementedError("the tests set session states themselves")

    async def stop(self, slot: Slot) -> None:
        return None

    async def logout(self, slot: Slot) -> None:
        return None

    async def pair(self, slot: Slot, phone: str) -> str:
        raise NotImplementedError

    async def mark_read(
        self, slot: Slot, chat_id: str, sender: str | None, message_ids: list[str]
    ) -> None:
        return None

    async def phone_for_lid(self, slot: Slot, lid: str) -> str | None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class Engine:
    store: ShardStore
    queue: OutboundQueue
    runner: OutboundRunner
    backend: FakeBackend
    task: asyncio.Task[None]

    async def send(self, slot: str, to: str, text: str = "x") -> int:
        row, _ = await self.queue.enqueue(Slot.parse(slot), TextMessage(to=to, text=text))
        self.runner.wake.set()
        return row.id

    async def states(self) -> dict[int, tuple[str, str | None, int]]:
        rows = self.queue._db.execute("SELECT id, state, reason, attempts FROM outbound")
        return {r[0]: (r[1], r[2], r[3]) for r in rows.fetchall()}


def settings_for(**overrides: Any) -> SendSettings:
    values: dict[str, Any] = {
        "concurrency": 32,
        "max_attempts": 8,
        "max_age_s": 3600.0,
        "retry_base_s": 0.02,
        "retry_cap_s": 0.1,
        "timeout_s": 60.0,
        **overrides,
    }
    return SendSettings(**values)


@pytest.fixture
async def engine_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Engine] = []

    async def make(
        slots: list[str],
        backend: FakeBackend | None = None,
        pacing: Pacing = FAST,
        seed: int = 1,
        **send: Any,
    ) -> Engine:
        backend = backend or FakeBackend()
        sessions = SessionManager(
            config(tmp_path, max_active=50), backend, EventLog(stream=io.StringIO())
        )
        for slot in slots:
            sessions.states[Slot.parse(slot)] = SessionState("CONNECTED")
        store = ShardStore(tmp_path / f"queue-{len(made)}.sqlite3")
        queue = store.queue
        runner = OutboundRunner(
            queue,
            sessions,
            sessions.log,
            CollectorRegistry(),
            settings=settings_for(**send),
            pacer=Pacer(pacing, rng=random.Random(seed)),
            rng=random.Random(seed),
        )
        engine = Engine(store, queue, runner, backend, asyncio.create_task(runner.run()))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await engine.task
        engine.store.close()


def chat(n: int) -> str:
    return f"55119000000{n:02d}"


async def test_order_per_chat_holds_across_concurrent_lanes_and_retries(
    engine_factory: Callable[..., Any],
) -> None:
    """Each chat's messages leave in queue order even when some fail and are retried,
    while the lanes of different accounts send at the same time."""

    def flaky(wa_id: str) -> bool:
        return int(hashlib.sha256(wa_id.encode()).hexdigest(), 16) % 3 == 0

    def fail(slot: str, wa_id: str, attempt: int) -> Exception | None:
        # A third of the messages fail once or twice before they go through.
        return ConnectionError("reset") if flaky(wa_id) and attempt <= 2 else None

    backend = FakeBackend(delay=0.005, fail=fail)
    slots = [f"A{n}" for n in range(1, 7)]
    engine = await engine_factory(slots, backend)
    ids: dict[tuple[str, str], list[int]] = {}
    for i in range(20):
        for slot in slots:
            for c in range(3):
                row = await engine.send(slot, chat(c), f"m{i}")
                ids.setdefault((slot, chat(c)), []).append(row)
    rows = {
        r[0]: r[1]
        for r in engine.queue._db.execute("SELECT id, wa_message_id FROM outbound").fetchall()
    }
    assert any(flaky(wa_id) for wa_id in rows.values())
    await wait_until(
        lambda: (
            engine.queue._db.execute(
                "SELECT count(*) FROM outbound WHERE state='queued'"
            ).fetchone()[0]
            == 0
        ),
        within=30,
        what="queue drained",
    )
    assert {state for state, _, _ in (await engine.states()).values()} == {"sent"}
    by_id = {wa_id: row for row, wa_id in rows.items()}
    for (slot, to), expected in ids.items():
        attempts = [s for s in backend.log if s.slot == slot and s.to == f"{to}@s.whatsapp.net"]
        delivered = [by_id[s.wa_message_id] for s in attempts if s.ok]
        assert delivered == expected, (slot, to)
        # No attempt of a message began before the previous message's last attempt ended.
        for earlier, later in itertools.pairwise(expected):
            last_of_earlier = max(s.end for s in attempts if by_id[s.wa_message_id] == earlier)
            first_of_later = min(s.start for s in attempts if by_id[s.wa_message_id] == later)
            assert first_of_later >= last_of_earlier
    assert backend.most_in_flight > 1  # the lanes did run side by side


async def test_a_stuck_session_does_not_hold_up_the_others(
    engine_factory: Callable[..., Any],
) -> None:
    backend = FakeBackend(delay=0.05, hang={"A1"})
    slots = [f"A{n}" for n in range(1, 6)]
    engine = await engine_factory(slots, backend, concurrency=4)
    stuck = await engine.send("A1", chat(1))
    others = [await engine.send(slot, chat(c)) for slot in slots[1:] for c in range(5)]
    await wait_until(
        lambda: all(
            engine.queue._db.execute("SELECT state FROM outbound WHERE id=?", (row,)).fetchone()[0]
            == "sent"
            for row in others
        ),
        within=5,
        what="the other accounts' messages sent",
    )
    assert (await engine.states())[stuck][0] == "queued"  # still hanging, still queued


async def test_a_send_that_hangs_past_the_timeout_is_retried(
    engine_factory: Callable[..., Any],
) -> None:
    calls = 0

    def fail(slot: str, wa_id: str, attempt: int) -> Exception | None:
        return None

    backend = FakeBackend(fail=fail)
    engine = await engine_factory(["A1"], backend, timeout_s=0.1)
    original = backend.send

    async def first_hangs(slot: Slot, message: Outgoing) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        await original(slot, message)

    backend.send = first_hangs  # type: ignore[method-assign]
    row = await engine.send("A1", chat(1))
    await wait_until(lambda: calls >= 2, within=5, what="a second attempt")
    await wait_until(
        lambda: (
            engine.queue._db.execute("SELECT state FROM outbound WHERE id=?", (row,)).fetchone()[0]
            == "sent"
        ),
        within=5,
        what="sent after the timeout",
    )


def test_backoff_ceiling_doubles_up_to_the_cap_and_each_delay_is_jittered() -> None:
    rng = random.Random(3)
    base, cap = 2.0, 600.0
    previous_mean = 0.0
    for attempt in range(1, 12):
        ceiling = min(cap, base * 2 ** (attempt - 1))
        delays = [retry_delay(attempt, base, cap, rng) for _ in range(400)]
        assert all(ceiling / 10 <= d <= ceiling for d in delays), attempt
        assert max(delays) - min(delays) > 0.6 * ceiling  # spread over the range: jitter
        mean = sum(delays) / len(delays)
        assert 0.45 * ceiling < mean < 0.65 * ceiling
        if ceiling < cap:
            assert mean > 1.6 * previous_mean  # grows about twofold a step
        previous_mean = mean
    assert retry_delay(10_000, base, cap, rng) <= cap  # no overflow for a huge count


def test_failure_reasons_name_the_error_and_stay_short() -> None:
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert failure_reason(ConnectionError("reset by peer")) == "ConnectionError: reset by peer"
    assert len(failure_reason(RuntimeError("x" * 5000))) == 200


async def test_transient_failures_back_off_and_never_hot_loop(
    engine_factory: Callable[..., Any],
) -> None:
    """A message that always fails is tried a handful of times in a window where a hot
    loop would try it thousands of times; the gaps grow; it stays queued with its reason."""
    backend = FakeBackend(fail=lambda s, w, attempt: RuntimeError(f"boom {attempt}"))
    engine = await engine_factory(
        ["A1"], backend, retry_base_s=0.05, retry_cap_s=10.0, max_attempts=100
    )
    row = await engine.send("A1", chat(1))
    await asyncio.sleep(1.6)
    starts = [s.start for s in backend.log]
    # Ceilings 0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s: at most 6 gaps fit in 1.6 s at their floors
    # (a tenth of each), and at least the first three at their ceilings.
    assert 3 <= len(starts) <= 9, len(starts)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for n, gap in enumerate(gaps, 1):
        assert gap >= 0.05 * 2 ** (n - 1) / 10 - 0.005, (n, gaps)
    state, reason, attempts = (await engine.states())[row]
    assert (state, attempts) == ("queued", len(starts))
    assert reason == f"RuntimeError: boom {len(starts)}"


async def test_a_message_ends_failed_after_max_attempts_with_the_last_reason(
    engine_factory: Callable[..., Any],
) -> None:
    backend = FakeBackend(fail=lambda s, w, attempt: RuntimeError(f"boom {attempt}"))
    engine = await engine_factory(["A1"], backend, retry_base_s=0.01, max_attempts=3)
    row = await engine.send("A1", chat(1))
    await wait_until(
        lambda: (
            engine.queue._db.execute("SELECT state FROM outbound WHERE id=?", (row,)).fetchone()[0]
            == "failed"
        ),
        within=5,
        what="failed",
    )
    assert (await engine.states())[row] == ("failed", "RuntimeError: boom 3", 2)
    assert len(backend.log) == 3
    await asyncio.sleep(0.2)
    assert len(backend.log) == 3  # and never tried again


async def test_a_message_ends_failed_after_max_age_with_the_last_reason(
    engine_factory: Callable[..., Any],
) -> None:
    backend = FakeBackend(fail=lambda s, w, attempt: ConnectionError(f"down {attempt}"))
    engine = await engine_factory(
        ["A1"], backend, retry_base_s=0.02, retry_cap_s=0.05, max_attempts=100, max_age_s=0.4
    )
    row = await engine.send("A1", chat(1))
    await wait_until(
        lambda: (
            engine.queue._db.execute("SELECT state FROM outbound WHERE id=?", (row,)).fetchone()[0]
            == "failed"
        ),
        within=5,
        what="failed",
    )
    _, reason, _ = (await engine.states())[row]
    tries = len(backend.log)
    assert 3 <= tries < 100
    assert reason == f"ConnectionError: down {tries}"
    assert backend.log[-1].start - backend.log[0].start >= 0.4


async def test_a_final_refusal_fails_at_once(engine_factory: Callable[..., Any]) -> None:
    backend = FakeBackend(fail=lambda s, w, attempt: SendFailed("not_on_whatsapp"))
    engine = await engine_factory(["A1"], backend)
    row = await engine.send("A1", chat(1))
    await wait_until(
        lambda: (
            engine.queue._db.execute("SELECT state FROM outbound WHERE id=?", (row,)).fetchone()[0]
            == "failed"
        ),
        within=5,
        what="failed",
    )
    assert (await engine.states())[row] == ("failed", "not_on_whatsapp", 0)
    assert len(backend.log) == 1


async def test_a_message_whatsapp_named_itself_is_known_by_that_name(
    engine_factory: Callable[..., Any],
) -> None:
    """A backend that cannot send under the row's id (neonize) returns WhatsApp's: the row,
    its `sent` event and the history's copy take it, so the receipts WhatsApp sends for it
    move the message on, and replies and reactions can name it."""
    engine = await engine_factory(["A1"], FakeBackend(assigns_ids=True))
    row = await engine.send("A1", chat(1))
    await wait_until(
        lambda: (
            engine.queue._db.execute("SELECT state FROM outbound WHERE id=?", (row,)).fetchone()[0]
            == "sent"
        ),
        within=5,
        what="sent",
    )
    ours = engine.queue._db.execute("SELECT wa_message_id FROM outbound WHERE id=?", (row,))
    named = ours.fetchone()[0]
    assert named.startswith("3EB0WA")
    kept = engine.queue._db.execute("SELECT wa_message_id FROM messages WHERE slot='A1'")
    assert [r[0] for r in kept.fetchall()] == [named]
    moved = await engine.queue.receipt(Slot.parse("A1"), [named], "delivered", chat(1))
    assert [status["id"] for status in moved] == [row]
    assert (await engine.states())[row][0] == "delivered"
    statuses = [
        json.loads(data)
        for (data,) in engine.queue._db.execute(
            "SELECT body FROM outbox WHERE type='message.status' ORDER BY seq"
        ).fetchall()
    ]
    assert [(s["data"]["state"], s["data"]["waMessageId"]) for s in statuses][1:] == [
        ("sent", named),
        ("delivered", named),
    ]


async def test_a_receipt_that_beats_whatsapps_id_back_is_kept_for_it(
    engine_factory: Callable[..., Any],
) -> None:
    """The recipient's device may answer before the send call returns WhatsApp's id (which
    the row does not know yet): the receipt waits, and the row takes it with the id. One
    for an id no message will ever take is dropped after a day, not kept forever."""
    engine = await engine_factory(["A1"], FakeBackend(assigns_ids=True, delay=0.5))
    row = await engine.send("A1", chat(1))
    await wait_until(lambda: len(engine.backend.log) == 1, within=5, what="send started")
    ours = engine.queue._db.execute("SELECT wa_message_id FROM outbound WHERE id=?", (row,))
    future = "3EB0WA" + ours.fetchone()[0][-10:]  # what the fake's WhatsApp will name it
    a1 = Slot.parse("A1")
    assert await engine.queue.receipt(a1, [future], "delivered", chat(1)) == []
    assert await engine.queue.receipt(a1, ["3EB0NEVER"], "read", chat(1)) == []
    await wait_until(
        lambda: (
            engine.queue._db.execute("SELECT state FROM outbound WHERE id=?", (row,)).fetchone()[0]
            != "queued"
        ),
        within=5,
        what="ended",
    )
    assert (await engine.states())[row][0] == "delivered"
    kept = engine.queue._db.execute("SELECT wa_message_id FROM messages WHERE slot='A1'")
    assert [r[0] for r in kept.fetchall()] == [future]
    waiting = engine.queue._db.execute("SELECT wa_message_id FROM unmatched_receipts")
    assert [r[0] for r in waiting.fetchall()] == ["3EB0NEVER"]
    engine.queue._db.execute("UPDATE unmatched_receipts SET at=at-86401")
    await engine.queue.receipt(a1, [future], "read", chat(1))  # any receipt sweeps
    assert engine.queue._db.execute("SELECT count(*) FROM unmatched_receipts").fetchone() == (0,)
    assert (await engine.states())[row][0] == "read"


async def test_nothing_is_sent_without_the_lease_or_a_connected_session(
    engine_factory: Callable[..., Any],
) -> None:
    backend = FakeBackend()
    engine = await engine_factory(["A1"], backend)
    engine.runner.sessions.states[Slot.parse("A2")] = SessionState("CONNECTING")
    waiting = await engine.send("A2", chat(1))

    class Lost:
        held = False

    engine.runner.sessions.lease = Lost()
    held = await engine.send("A1", chat(1))
    await asyncio.sleep(0.5)
    assert backend.log == []
    engine.runner.sessions.lease = None
    await wait_until(lambda: len(backend.log) == 1, within=5, what="sent once the lease is back")
    assert (await engine.states())[held][0] == "sent"
    assert (await engine.states())[waiting][0] == "queued"


# --- pacing -------------------------------------------------------------------------


# A send's start is logged a turn of the event loop after its token was taken (the
# timeout's task starts it), so the engine's log is checked with that much slack.
SLACK = 0.01


def conforms(times: list[float], rate: Rate, slack: float = 0.0) -> bool:
    """The token bucket's promise, stated on its own: over any stretch [t_i, t_j] of the
    sends, no more than burst + perMinute * (t_j - t_i) / 60 of them."""
    times = sorted(times)
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = rate.burst + rate.perMinute * (times[j] - times[i] + slack) / 60
            if j - i + 1 > allowed + 1e-9:
                return False
    return True


def test_the_oracle_refuses_a_schedule_over_the_pace() -> None:
    rate = Rate(perMinute=60, burst=2)
    assert conforms([0, 0, 1, 2, 3], rate)
    assert not conforms([0, 0, 0], rate)
    assert not conforms([0, 0, 0.5], rate)


@settings(max_examples=200, deadline=None)
@given(
    per_minute=st.integers(1, 600),
    burst=st.integers(1, 6),
    asks=st.lists(st.floats(0, 120, allow_nan=False), min_size=1, max_size=60),
)
def test_a_bucket_never_lets_more_through_than_its_rate(
    per_minute: int, burst: int, asks: list[float]
) -> None:
    """Whoever asks whenever, sending as soon as the bucket says so stays within the bound."""
    rate = Rate(perMinute=per_minute, burst=burst)
    bucket = TokenBucket.full(rate, 0.0)
    sent: list[float] = []
    for asked in sorted(asks):
        now = max(asked, sent[-1] if sent else 0.0)
        now += bucket.wait(now)
        bucket.take(now)
        sent.append(now)
    assert conforms(sent, rate)
    # and it is not stricter than promised: the first `burst` asks at one time all pass
    fresh = TokenBucket.full(rate, 0.0)
    for _ in range(burst):
        assert fresh.wait(0.0) == 0
        fresh.take(0.0)
    assert fresh.wait(0.0) > 0


def test_a_held_session_waits_for_its_token_plus_a_random_part_of_an_interval() -> None:
    now = [0.0]
    pacer = Pacer(
        Pacing(
            session=Rate(perMinute=60, burst=1),
            recipient=Rate(perMinute=600, burst=10),
            jitter=1.0,
        ),
        clock=lambda: now[0],
        rng=random.Random(5),
    )
    waits = []
    for _ in range(50):
        assert pacer.session_wait("A1", now[0]) == 0
        pacer.take("A1", "x", now[0])
        wait = pacer.session_wait("A1", now[0])
        assert pacer.session_wait("A1", now[0]) == pytest.approx(wait)  # one draw per hold
        waits.append(wait)
        now[0] += wait
    assert all(1.0 <= w <= 2.0 for w in waits)  # the interval is 1 s, the jitter up to 1 s
    assert max(waits) - min(waits) > 0.5


@settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # real time: a failure is shown as is
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    session=st.tuples(st.integers(600, 2400), st.integers(1, 4)),
    recipient=st.tuples(st.integers(300, 1200), st.integers(1, 3)),
    plan=st.lists(
        st.tuples(st.sampled_from(["A1", "A2"]), st.integers(0, 2)), min_size=5, max_size=24
    ),
)
async def test_the_engine_never_sends_faster_than_the_pace(
    tmp_path_factory: pytest.TempPathFactory,
    session: tuple[int, int],
    recipient: tuple[int, int],
    plan: list[tuple[str, int]],
) -> None:
    pacing = Pacing(
        session=Rate(perMinute=session[0], burst=session[1]),
        recipient=Rate(perMinute=recipient[0], burst=recipient[1]),
        jitter=0.2,
    )
    backend = FakeBackend(delay=0.001)
    tmp = tmp_path_factory.mktemp("pace")
    sessions = SessionManager(config(tmp), backend, EventLog(stream=io.StringIO()))
    for slot in ("A1", "A2"):
        sessions.states[Slot.parse(slot)] = SessionState("CONNECTED")
    store = ShardStore(tmp / "queue.sqlite3")
    queue = store.queue
    runner = OutboundRunner(
        queue,
        sessions,
        sessions.log,
        CollectorRegistry(),
        settings=settings_for(),
        pacer=Pacer(pacing),
    )
    task = asyncio.create_task(runner.run())
    try:
        for slot, c in plan:
            await queue.enqueue(Slot.parse(slot), TextMessage(to=chat(c), text="x"))
        runner.wake.set()
        await wait_until(lambda: len(backend.log) == len(plan), within=30, what="all sent")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.close()
    for slot in ("A1", "A2"):
        mine = [s for s in backend.log if s.slot == slot]
        assert conforms([s.start for s in mine], pacing.session, SLACK), slot
        for c in range(3):
            to = f"{chat(c)}@s.whatsapp.net"
            assert conforms([s.start for s in mine if s.to == to], pacing.recipient, SLACK), (
                slot,
                c,
            )


async def test_held_messages_stay_queued_without_a_reason(
    engine_factory: Callable[..., Any],
) -> None:
    slow = Pacing(
        session=Rate(perMinute=1, burst=2), recipient=Rate(perMinute=1, burst=1), jitter=0
    )
    backend = FakeBackend()
    engine = await engine_factory(["A1"], backend, pacing=slow)
    first = await engine.send("A1", chat(1))
    second = await engine.send("A1", chat(1))  # the recipient's bucket is empty now
    third = await engine.send("A1", chat(2))  # another chat: goes
    fourth = await engine.send("A1", chat(3))  # the session's bucket is empty now
    await wait_until(lambda: len(backend.log) == 2, within=5, what="two sent")
    await asyncio.sleep(0.5)
    states = await engine.states()
    assert states[first][0] == states[third][0] == "sent"
    assert states[second] == ("queued", None, 0)
    assert states[fourth] == ("queued", None, 0)
    assert len(backend.log) == 2


async def test_a_stopping_worker_lets_the_sends_in_flight_finish_and_starts_no_more(
    engine_factory: Callable[..., Any],
) -> None:
    """A send cut off after WhatsApp took it but before its row says so would be sent
    again by the next worker: on shutdown the ones in flight finish and are recorded."""
    backend = FakeBackend(delay=0.3)
    engine = await engine_factory(["A1", "A2"], backend)
    first = await engine.send("A1", chat(1))
    second = await engine.send("A2", chat(2))
    later = await engine.send("A1", chat(1))

    async def both_sending() -> bool:
        return backend.in_flight == 2

    await eventually_async(both_sending, "both lanes sending", every=0.01)
    engine.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await engine.task
    states = await engine.states()
    assert (states[first][0], states[second][0], states[later][0]) == ("sent", "sent", "queued")
    assert [s.ok for s in backend.log] == [True, True]
    engine.task = asyncio.create_task(asyncio.Event().wait())  # the fixture cancels it


async def test_the_engine_stops_when_its_cancellation_meets_a_wake_up(
    engine_factory: Callable[..., Any],
) -> None:
    """A stop that arrives with a new message must still stop it (asyncio.wait_for on
    Python 3.11 swallows such a cancellation, and the worker's shutdown hung on it)."""
    engine = await engine_factory(["A1"])
    for _ in range(20):  # the dispatcher naps on its wake-up event between looks
        await asyncio.sleep(0.05)
        engine.runner.wake.set()
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    engine.runner.wake.set()
    engine.task.cancel()
    done, _ = await asyncio.wait({engine.task}, timeout=2)
    assert done, "the engine did not stop"
    assert engine.task.cancelled()
    engine.task = asyncio.create_task(asyncio.Event().wait())  # the fixture cancels it
