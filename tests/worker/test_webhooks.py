"""Webhook delivery against a real receiver: an aiohttp server on 127.0.0.1 that
verifies every request with the official Standard Webhooks libraries (Python,
and JavaScript from npm) and answers what each test scripts: 2xx, 500, 400,
410, 429 with Retry-After, or slowly."""

from __future__ import annotations

import asyncio
import io
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from wasp_worker.app import build_app as build_worker
from wasp_worker.events import EventLog
from wasp_worker.store import ShardStore
from wasp_worker.webhooks import outbox
from wasp_worker.webhooks.delivery import Backoff
from wasp_worker.webhooks.service import Webhooks

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config as worker_config
from wasp.webhooks import Event, new_secret

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
Answer = Callable[[dict[str, Any], int], Awaitable[web.StreamResponse]]


@dataclass
class Arrival:
    path: str
    headers: dict[str, str]
    body: bytes
    event: dict[str, Any]
    status: int


@dataclass
class Receiver:
    """Scripts answers by path; records every request after verifying its signature."""

    secrets: dict[str, str] = field(default_factory=dict)  # path -> secret
    answers: dict[str, Answer] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        try:
            event = Webhook(self.secrets[request.path]).verify(body, headers)
        except WebhookVerificationError as error:
            raise AssertionError(f"signature refused: {error}") from None
        seen = sum(1 for a in self.arrivals if a.event["id"] == event["id"])
        answer = self.answers.get(request.path)
        response = await answer(event, seen) if answer else web.Response(status=204)
        self.arrivals.append(Arrival(request.path, headers, body, event, response.status))
        return response

    def delivered(self, path: str) -> list[dict[str, Any]]:
        return [a.event for a in self.arrivals if a.path == path and 200 <= a.status < 300]

    def tried(self, path: str) -> list[dict[str, Any]]:
        return [a.event for a in self.arrivals if a.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", found.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        found.url = str(server.make_url("")).rstrip("/")
        yield found


class FastClock:
    """Real time plus what the code under test slept: hours pass at once."""

    def __init__(self) -> None:
        self.skipped = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return time.time() + self.skipped

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.skipped += seconds
        await asyncio.sleep(0.001)


@dataclass
class Setup:
    webhooks: Webhooks
    log: io.StringIO
    registry: CollectorRegistry
    config: Path


def configure(
    config: Path,
    receiver: Receiver,
    subscriptions: list[dict[str, Any]],
    allow: tuple[str, ...] = ("127.0.0.0/8",),
) -> None:
    """webhooks.json and the secrets file as the master writes them. A subscription gets
    the events recorded after the worker has read it (`subscribe`)."""
    config.mkdir(parents=True, exist_ok=True)
    secrets = {}
    for subscription in subscriptions:
        path = "/" + subscription["id"]
        receiver.secrets.setdefault(path, new_secret())
        secrets[subscription["id"]] = receiver.secrets[path]
        subscription.setdefault("url", receiver.url + path)
        subscription.setdefault("events", ["session.status"])
    document = {"subscriptions": subscriptions, "allow": list(allow)}
    (config / "webhooks.json").write_text(json.dumps(document))
    (config / "webhook-secrets.json").write_text(json.dumps(secrets))


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Setup]]]:
    made: list[Webhooks] = []
    tasks: list[asyncio.Task[None]] = []
    stores: list[ShardStore] = []

    async def make(
        backoff: Backoff | None = None,
        clock: Any = None,
        rng: random.Random | None = None,
        timeout_s: float = 2.0,
    ) -> Setup:
        log, registry = io.StringIO(), CollectorRegistry()
        store = ShardStore.in_folder(tmp_path / "data")
        stores.append(store)
        webhooks = Webhooks(
            store.outbox,
            tmp_path / "config",
            None,
            EventLog(stream=log),
            registry,
            timeout_s=timeout_s,
            backoff=backoff or Backoff(base_s=0.01, cap_s=0.05),
            clock=clock,
            rng=rng,
        )
        await webhooks.open()
        made.append(webhooks)
        tasks.append(asyncio.create_task(webhooks.run()))
        return Setup(webhooks, log, registry, tmp_path / "config")

    yield make
    for task in tasks:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for webhooks in made:
        await webhooks.close()
    for store in stores:
        store.close()


async def wait_until(check: Callable[[], object], within_s: float = 10) -> None:
    async def poll() -> bool:
        return bool(check())

    await eventually_async(poll, "the condition", within_s)


def status(slot: str, n: int) -> Event:
    return Event.new("session.status", slot, {"slot": slot, "status": "CONNECTED", "n": n})


async def subscribe(
    setup: Setup,
    receiver: Receiver,
    subscriptions: list[dict[str, Any]],
    allow: tuple[str, ...] = ("127.0.0.0/8",),
) -> None:
    configure(setup.config, receiver, subscriptions, allow)
    await setup.webhooks.deliverer.sync()


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_every_event_arrives_signed_in_order_per_slot_despite_errors(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    async def flaky(event: dict[str, Any], seen: int) -> web.Response:
        # The first two tries of every third event fail.
        return web.Response(status=500 if event["data"]["n"] % 3 == 0 and seen < 2 else 200)

    receiver.answers["/crm"] = flaky
    setup = await make()
    await subscribe(setup, receiver, [{"id": "crm"}])
    events = [status(slot, n) for n in range(12) for slot in ("A1", "A2", "A3")]
    for event in events:
        setup.webhooks.emit([event])
    await wait_until(lambda: len(receiver.delivered("/crm")) >= len(events), within_s=15)

    assert {e["id"] for e in receiver.delivered("/crm")} == {e.id for e in events}
    for slot in ("A1", "A2", "A3"):
        tried = [e["data"]["n"] for e in receiver.tried("/crm") if e["slot"] == slot]
        assert tried == sorted(tried), f"{slot} out of order: {tried}"  # retries included
    for arrival in receiver.arrivals:
        assert arrival.headers["webhook-id"] == arrival.event["id"]
        assert arrival.headers["webhook-signature"].startswith("v1,")
        assert arrival.event["type"] == "session.status"
    failures = metric(
        setup.registry, "wasp_webhook_failures_total", subscription="crm", reason="http_500"
    )
    assert failures == 24  # 4 failing events per slot, twice each
    attempts = metric(setup.registry, "wasp_webhook_attempts_total", subscription="crm")
    assert attempts == len(events) + 24


async def test_the_official_javascript_library_verifies_the_signatures(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await make()
    await subscribe(setup, receiver, [{"id": "crm"}])
    events = [status("A1", n) for n in range(3)]
    setup.webhooks.emit(events)
    await wait_until(lambda: len(receiver.delivered("/crm")) == 3, within_s=10)
    secret = receiver.secrets["/crm"]
    lines = [
        json.dumps({"secret": secret, "headers": a.headers, "body": a.body.decode()})
        for a in receiver.arrivals
    ]
    tampered = json.loads(lines[0])
    tampered["body"] = tampered["body"].replace('"n":0', '"n":9')
    lines.append(json.dumps(tampered))
    node = await asyncio.create_subprocess_exec(
        "node", str(JS / "verify_webhook.mjs"), stdin=PIPE, stdout=PIPE
    )
    out, _ = await asyncio.wait_for(node.communicate("\n".join(lines).encode()), 30)
    assert node.returncode == 0
    verified = out.decode().splitlines()
    assert verified[:3] == [f"ok {e.id}" for e in events]
    assert verified[3].startswith("bad ")


async def test_a_4xx_is_a_dead_letter_the_lane_moves_on_and_a_replay_redelivers(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    refuse = {"on": True}

    async def picky(event: dict[str, Any], seen: int) -> web.Response:
        return web.Response(status=400 if event["data"]["n"] == 1 and refuse["on"] else 200)

    receiver.answers["/crm"] = picky
    setup = await make()
    await subscribe(setup, receiver, [{"id": "crm"}])
    events = [status("A1", n) for n in range(3)]
    setup.webhooks.emit(events)
    await wait_until(lambda: len(receiver.delivered("/crm")) == 2, within_s=10)
    assert [e["data"]["n"] for e in receiver.tried("/crm")] == [0, 1, 2]  # 400: tried once
    dead = await setup.webhooks.outbox.dead_letters("A1")
    assert [(d["id"], d["reason"], d["attempts"]) for d in dead] == [(events[1].id, "http_400", 1)]
    await wait_until(
        lambda: metric(setup.registry, "wasp_webhook_dead_letters", subscription="crm") == 1
    )
    refuse["on"] = False
    assert await setup.webhooks.outbox.replay("A1", None, None) == 1
    setup.webhooks.deliverer.wake()
    await wait_until(lambda: len(receiver.delivered("/crm")) == 3, within_s=10)
    assert receiver.delivered("/crm")[-1]["id"] == events[1].id  # same id: receivers dedupe
    assert await setup.webhooks.outbox.dead_letters("A1") == []


async def test_410_disables_the_subscription_and_the_others_go_on(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    async def gone(event: dict[str, Any], seen: int) -> web.Response:
        return web.Response(status=410)

    receiver.answers["/old"] = gone
    setup = await make()
    await subscribe(setup, receiver, [{"id": "old"}, {"id": "crm"}])
    setup.webhooks.emit([status("A1", n) for n in range(3)])
    await wait_until(lambda: len(receiver.delivered("/crm")) == 3, within_s=10)
    await asyncio.sleep(0.3)
    assert len(receiver.tried("/old")) == 1
    setup.webhooks.emit([status("A2", 9)])
    await wait_until(lambda: len(receiver.delivered("/crm")) == 4, within_s=10)
    await asyncio.sleep(0.3)
    assert len(receiver.tried("/old")) == 1
    assert metric(setup.registry, "wasp_webhook_disabled", subscription="old") == 1
    assert '"event": "webhook_disabled"' in setup.log.getvalue()


async def test_429_and_408_are_retried_after_retry_after_or_the_backoff(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    async def busy(event: dict[str, Any], seen: int) -> web.Response:
        if seen == 0:
            return web.Response(status=429, headers={"Retry-After": "7"})
        if seen == 1:
            return web.Response(status=408)
        return web.Response(status=200)

    receiver.answers["/crm"] = busy
    clock = FastClock()

    class Highest(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    setup = await make(backoff=Backoff(base_s=3, cap_s=100), clock=clock, rng=Highest())
    await subscribe(setup, receiver, [{"id": "crm"}])
    setup.webhooks.emit([status("A1", 0)])
    await wait_until(lambda: len(receiver.delivered("/crm")) == 1, within_s=10)
    assert len(receiver.tried("/crm")) == 3
    # Retry-After: 7 for the 429, then the backoff's bound for a second attempt (3 * 2).
    assert [round(s) for s in clock.sleeps] == [7, 6]


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    backoff = Backoff(base_s=2, cap_s=60)
    rng = random.Random(7)
    for attempts, bound in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (30, 60)]:
        drawn = [backoff.delay(attempts, rng) for _ in range(200)]
        assert all(0 <= d < bound for d in drawn)
        assert max(drawn) > bound * 0.9
        assert min(drawn) < bound * 0.1  # the whole range, not a fixed delay plus noise


async def test_past_the_horizon_an_event_is_a_dead_letter(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    async def down(event: dict[str, Any], seen: int) -> web.Response:
        return web.Response(status=503)

    receiver.answers["/crm"] = down
    clock = FastClock()
    setup = await make(backoff=Backoff(base_s=60, cap_s=3600, horizon_s=86400), clock=clock)
    await subscribe(setup, receiver, [{"id": "crm"}])
    setup.webhooks.emit([status("A1", 0), status("A1", 1)])
    dead = await eventually_async(
        lambda: setup.webhooks.outbox.dead_letters("A1"), "a dead letter", 20
    )
    assert dead[0]["reason"] == "horizon: http_503"
    assert dead[0]["attempts"] > 10
    # Retried until the next try would fall past the horizon, not beyond it.
    first = dead[0]["attempts"] - 1  # sleeps between the first event's attempts
    assert 86400 - 3600 < sum(clock.sleeps[:first]) <= 86400


async def test_a_slow_receiver_holds_back_neither_other_subscriptions_nor_other_slots(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    async def slow(event: dict[str, Any], seen: int) -> web.Response:
        if event["slot"] == "A1":
            await asyncio.sleep(5)
        return web.Response(status=200)

    receiver.answers["/slow"] = slow
    setup = await make(timeout_s=1.0)
    await subscribe(setup, receiver, [{"id": "slow"}, {"id": "crm"}])
    started = time.monotonic()
    setup.webhooks.emit([status("A1", 0), status("A2", 1), status("A1", 2), status("A2", 3)])
    await wait_until(lambda: len(receiver.delivered("/crm")) == 4, within_s=10)
    await wait_until(lambda: len(receiver.delivered("/slow")) == 2, within_s=10)
    assert time.monotonic() - started < 1.5
    assert [e["slot"] for e in receiver.delivered("/slow")] == ["A2", "A2"]
    await wait_until(
        lambda: (
            metric(
                setup.registry, "wasp_webhook_failures_total", subscription="slow", reason="timeout"
            )
            >= 1
        ),
        within_s=10,
    )
    assert (
        metric(setup.registry, "wasp_webhook_oldest_undelivered_seconds", subscription="slow") >= 0
    )


async def test_the_target_is_checked_again_at_delivery(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await make()
    await subscribe(setup, receiver, [{"id": "crm"}], allow=())  # loopback no longer allowed
    setup.webhooks.emit([status("A1", 0)])
    await wait_until(
        lambda: (
            metric(
                setup.registry,
                "wasp_webhook_failures_total",
                subscription="crm",
                reason="unsafe_target",
            )
            >= 2
        ),
        within_s=10,
    )
    assert receiver.arrivals == []


async def test_subscriptions_filter_by_type_slots_and_workspaces(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await make()
    (setup.config).mkdir(parents=True, exist_ok=True)
    (setup.config / "accounts.json").write_text(json.dumps([{"slot": "A7", "ws": "sales"}]))
    await subscribe(
        setup,
        receiver,
        [
            {"id": "range", "slots": ["A1-A5"]},
            {"id": "sales", "workspaces": ["sales"]},
            {"id": "qr", "events": ["session.qr"]},
        ],
    )
    qr = Event.new("session.qr", "A7", {"slot": "A7", "qr": "data:image/png;base64,AA"})
    setup.webhooks.emit([status("A1", 0), status("A7", 1), qr, status("A9", 2)])
    await wait_until(lambda: len(receiver.arrivals) == 3, within_s=10)
    await asyncio.sleep(0.3)
    assert [e["slot"] for e in receiver.delivered("/range")] == ["A1"]
    assert [e["slot"] for e in receiver.delivered("/sales")] == ["A7"]
    assert [e["type"] for e in receiver.delivered("/qr")] == ["session.qr"]


def test_outbox_add_writes_in_the_callers_transaction(tmp_path: Path) -> None:
    # Any database with the schema can hold the outbox, beside its own tables.
    db = sqlite3.connect(tmp_path / "history.sqlite3", isolation_level=None)
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
    outbox.create(db)
    outbox.create(db)  # idempotent: a migration step
    with pytest.raises(RuntimeError, match="open transaction"):
        outbox.add(db, [status("A1", 0)])
    db.execute("BEGIN")
    db.execute("INSERT INTO messages (body) VALUES ('x')")
    outbox.add(db, [status("A1", 1)])
    db.execute("ROLLBACK")
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    db.execute("BEGIN")
    db.execute("INSERT INTO messages (body) VALUES ('x')")
    outbox.add(db, [status("A1", 2), status("A2", 3)])
    db.execute("COMMIT")
    rows = db.execute("SELECT slot, type FROM outbox ORDER BY seq").fetchall()
    assert rows == [("A1", "session.status"), ("A2", "session.status")]


async def test_secrets_never_reach_the_log(
    receiver: Receiver, make: Callable[..., Awaitable[Setup]]
) -> None:
    async def mixed(event: dict[str, Any], seen: int) -> web.Response:
        return web.Response(status=(500, 400, 410)[event["data"]["n"]] if seen == 0 else 200)

    receiver.answers["/crm"] = mixed
    setup = await make()
    await subscribe(setup, receiver, [{"id": "crm"}])
    setup.webhooks.emit([status("A1", n) for n in range(3)])
    await wait_until(lambda: "webhook_disabled" in setup.log.getvalue(), within_s=10)
    logged = setup.log.getvalue()
    assert "webhook_retry" in logged
    assert "webhook_dead_letter" in logged
    secret = receiver.secrets["/crm"]
    assert secret not in logged
    assert secret.removeprefix("whsec_") not in logged


async def test_a_worker_sends_session_events_and_serves_dead_letters(
    tmp_path: Path, receiver: Receiver
) -> None:
    """End to end through the worker: connecting a slot emits session.status and
    session.qr; the slot's dead letters are listed and replayed over its API."""
    refuse = {"on": True}

    async def refuse_status(event: dict[str, Any], seen: int) -> web.Response:
        return web.Response(
            status=422 if event["type"] == "session.status" and refuse["on"] else 200
        )

    receiver.answers["/crm"] = refuse_status
    config = worker_config(tmp_path)
    configure(
        config.config_dir, receiver, [{"id": "crm", "events": ["session.status", "session.qr"]}]
    )
    app = build_worker(config, EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app)) as worker:
        async with worker.post("/api/accounts/A1/connect", headers=CREDENTIAL) as response:
            assert response.status == 200
        await wait_until(lambda: len(receiver.delivered("/crm")) >= 1, within_s=10)
        assert {e["type"] for e in receiver.tried("/crm")} == {"session.status", "session.qr"}
        qr = receiver.delivered("/crm")[0]
        assert qr["slot"] == "A1"
        assert qr["data"]["qr"].startswith("data:image/png")

        async def dead() -> list[dict[str, Any]]:
            async with worker.get("/api/accounts/A1/webhooks/dead", headers=CREDENTIAL) as response:
                assert response.status == 200
                return list((await response.json())["dead"])

        listed = await eventually_async(dead, "a dead letter", 10)
        assert listed[0]["subscription"] == "crm"
        assert listed[0]["type"] == "session.status"
        assert listed[0]["reason"] == "http_422"
        assert "data" not in listed[0]
        refuse["on"] = False
        async with worker.post(
            "/api/accounts/A1/webhooks/replay", json={"subscription": "crm"}, headers=CREDENTIAL
        ) as response:
            assert response.status == 200
            replayed = (await response.json())["replayed"]
        assert replayed == len(listed)
        await wait_until(
            lambda: any(e["id"] == listed[0]["id"] for e in receiver.delivered("/crm")), within_s=10
        )
        assert await dead() == []
        async with worker.get("/api/accounts/A99/webhooks/dead", headers=CREDENTIAL) as response:
            assert response.status == 409
