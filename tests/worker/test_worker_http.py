"""The worker's HTTP contract, over a real loopback server, simulator backend."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.config import WorkerConfig
from wasp_worker.events import EventLog
from wasp_worker.state import METRICS, SESSIONS

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL, WORKER_TOKEN
from wasp.metrics_port import metrics_app


def config(tmp_path: Path, **overrides: Any) -> WorkerConfig:
    values: dict[str, Any] = {
        "port": 8080,
        "slot_from": "A1",
        "slot_to": "A50",
        "max_active": 3,
        "max_init": 2,
        "warmup_limit": 10,
        "config_dir": tmp_path / "config",
        "work_dir": tmp_path / "data",
        "backend": "simulator",
        "worker_tokens": WORKER_TOKEN,
        **overrides,
    }
    return WorkerConfig.model_validate(values)


async def scrape(worker: TestClient[Any, Any]) -> str:
    """What the worker's metrics port serves (`serve` runs it next to the API port)."""
    app = worker.app
    assert app is not None
    async with TestClient(TestServer(metrics_app(app[METRICS]))) as metrics:
        return await (await metrics.get("/metrics")).text()


async def test_health_has_its_documented_shape(worker: TestClient[Any, Any]) -> None:
    response = await worker.get("/health")
    assert response.status == 200
    assert await response.json() == {
        "ok": True,
        "worker": {"port": 8080, "slotFrom": "A1", "slotTo": "A50", "active": 0, "maxActive": 3},
    }


async def test_connect_shows_a_qr_and_scan_logs_in(worker: TestClient[Any, Any]) -> None:
    response = await worker.post("/api/accounts/A7/connect")
    body = await response.json()
    assert response.status == 200
    assert body["status"] == "CONNECTING"
    assert body["qr"].startswith("data:image/png;base64,")
    assert (await (await worker.get("/health")).json())["worker"]["active"] == 1
    scanned = await (await worker.post("/api/accounts/A7/scan")).json()
    assert scanned["status"] == "CONNECTED"
    assert scanned["qr"] is None
    status = await (await worker.get("/api/accounts/A7/status")).json()
    assert status["status"] == "CONNECTED"


async def test_a_connect_that_meets_one_in_progress_answers_once_it_shows_its_qr(
    worker: TestClient[Any, Any],
) -> None:
    """Warm-up, resume and clients may start a slot at once: each answer comes after the
    session initialised, so a client can act on it (scan its QR) straight away."""
    answers = await asyncio.gather(*(worker.post("/api/accounts/A3/connect") for _ in range(4)))
    bodies = [await answer.json() for answer in answers]
    assert [b["status"] for b in bodies] == ["CONNECTING"] * 4
    assert all(b["qr"] for b in bodies)
    assert (await worker.post("/api/accounts/A3/scan")).status == 200


@pytest.mark.parametrize("op", ["connect", "logout", "destroy", "scan"])
async def test_slot_outside_the_range_is_409_with_the_exact_body(
    worker: TestClient[Any, Any], op: str
) -> None:
    response = await worker.post(f"/api/accounts/A51/{op}")
    assert response.status == 409
    assert await response.json() == {"ok": False, "error": "slot not in this worker"}
    status = await worker.get("/api/accounts/B1/status")
    assert status.status == 409


@pytest.mark.parametrize("slot", ["a1", "A0", "A-1", "A1.5", "..%2FA1", "A" * 300])
async def test_bad_slot_is_400_and_changes_nothing(worker: TestClient[Any, Any], slot: str) -> None:
    response = await worker.post(f"/api/accounts/{slot}/connect")
    assert response.status == 400
    body = await response.json()
    assert body["ok"] is False
    assert "invalid slot" in body["error"]
    assert (await (await worker.get("/health")).json())["worker"]["active"] == 0


async def test_capacity_full_is_429_with_the_exact_body_and_a_log_event(
    worker: TestClient[Any, Any],
) -> None:
    for slot in ("A1", "A2", "A3"):
        assert (await worker.post(f"/api/accounts/{slot}/connect")).status == 200
    response = await worker.post("/api/accounts/A4/connect")
    assert response.status == 429
    assert await response.json() == {"ok": False, "error": "worker capacity full"}
    again = await worker.post("/api/accounts/A1/connect")  # already held: not a new session
    assert again.status == 200
    logs = (await (await worker.get("/logs")).json())["logs"]
    assert any(e["event"] == "worker_capacity_full" and e["slot"] == "A4" for e in logs)
    assert (await worker.post("/api/accounts/A1/destroy")).status == 200
    assert (await worker.post("/api/accounts/A4/connect")).status == 200


async def test_logout_wipes_auth_and_a_stored_session_resumes_without_qr(
    tmp_path: Path,
) -> None:
    app_config = config(tmp_path)
    async with TestClient(
        TestServer(build_app(app_config, EventLog(stream=io.StringIO()))),
        headers=CREDENTIAL,
    ) as client:
        await client.post("/api/accounts/A5/connect")
        await client.post("/api/accounts/A5/scan")
        await client.post("/api/accounts/A6/connect")
        await client.post("/api/accounts/A6/scan")
        assert (await client.post("/api/accounts/A6/logout")).status == 200
    async with TestClient(
        TestServer(build_app(app_config, EventLog(stream=io.StringIO()))),
        headers=CREDENTIAL,
    ) as client:
        # A5 logged in, so it is wanted: it comes back by itself, from its stored auth.
        for _ in range(100):
            resumed = await (await client.get("/api/accounts/A5/status")).json()
            if resumed["status"] == "CONNECTED":
                break
            await asyncio.sleep(0.05)
        assert (resumed["status"], resumed["qr"]) == ("CONNECTED", None)
        assert (await (await client.get("/api/accounts/A6/status")).json())["status"] == (
            "DISCONNECTED"
        )  # logged out: not wanted any more
        fresh = await (await client.post("/api/accounts/A6/connect")).json()
        assert fresh["status"] == "CONNECTING"
        assert fresh["qr"] is not None


async def test_warmup_starts_bound_enabled_slots_in_slot_order(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "roles.json").write_text(
        json.dumps(
            [
                {"name": "sales", "boundSlot": "A10"},
                {"name": "ops", "boundSlot": "A2"},
                {"name": "off", "boundSlot": "A3"},
                {"name": "elsewhere", "boundSlot": "A99"},
                {"name": "broken", "boundSlot": "../A1"},
            ]
        )
    )
    (config_dir / "accounts.json").write_text(
        json.dumps(
            [
                {"slot": "A2", "enabled": True},
                {"slot": "A10", "enabled": True},
                {"slot": "A3", "enabled": False},
                {"slot": "A99", "enabled": True},
            ]
        )
    )
    log = EventLog(stream=io.StringIO())
    async with TestClient(
        TestServer(build_app(config(tmp_path), log)), headers=CREDENTIAL
    ) as client:
        for _ in range(100):
            if any(e["event"] == "warmup_done" for e in log.recent()):
                break
            await asyncio.sleep(0.02)
        events = {e["event"]: e for e in log.recent()}
        assert events["warmup_start"]["slots"] == ["A2", "A10"]
        assert events["warmup_skip_disabled"]["slot"] == "A3"
        assert (events["warmup_done"]["ok"], events["warmup_done"]["fail"]) == (2, 0)
        health = await (await client.get("/health")).json()
        assert health["worker"]["active"] == 2


def test_warmup_respects_capacity_and_limit() -> None:
    from wasp_worker.warmup import plan

    from wasp.slots import SlotRange

    roles = [{"boundSlot": f"A{i}"} for i in range(1, 11)]
    accounts = [{"slot": f"A{i}", "enabled": True} for i in range(1, 11)]
    slots = SlotRange.parse("A1", "A50")
    assert [str(s) for s in plan(roles, accounts, slots, 0, 20, 3).start] == ["A1", "A2", "A3"]
    assert len(plan(roles, accounts, slots, 18, 20, 10).start) == 2
    assert plan(roles, accounts, slots, 20, 20, 10).capacity_left == 0


async def test_status_and_qr_reach_the_master_with_its_token(tmp_path: Path) -> None:
    from aiohttp import web

    received: list[tuple[str | None, dict[str, Any]]] = []

    async def emit(request: web.Request) -> web.Response:
        received.append((request.headers.get("x-master-token"), await request.json()))
        return web.json_response({"ok": True})

    master = web.Application()
    master.router.add_post("/internal/emit", emit)
    async with TestServer(master) as master_server:
        url = str(master_server.make_url("")).rstrip("/")
        app_config = config(tmp_path, master_internal_url=url, master_token="s3cret")
        log = EventLog(stream=io.StringIO())
        async with TestClient(TestServer(build_app(app_config, log)), headers=CREDENTIAL) as client:
            await client.post("/api/accounts/A8/connect")
            await client.post("/api/accounts/A8/scan")
            for _ in range(100):
                if len(received) >= 3:
                    break
                await asyncio.sleep(0.02)
    events = [(token, body["event"], body["payload"].get("status")) for token, body in received]
    assert ("s3cret", "wa:status", "CONNECTING") in events
    assert ("s3cret", "wa:qr", None) in events
    assert ("s3cret", "wa:status", "CONNECTED") in events
    assert "s3cret" not in json.dumps(log.recent())  # the token never reaches the logs


async def test_master_down_never_fails_a_request(tmp_path: Path) -> None:
    from tests.support.cluster import free_port

    app_config = config(tmp_path, master_internal_url=f"http://127.0.0.1:{free_port()}")
    log = EventLog(stream=io.StringIO())
    async with TestClient(TestServer(build_app(app_config, log)), headers=CREDENTIAL) as client:
        response = await client.post("/api/accounts/A9/connect")
        assert response.status == 200
        for _ in range(100):
            if any(e["event"] == "master_emit_failed" for e in log.recent()):
                break
            await asyncio.sleep(0.02)
    assert any(e["event"] == "master_emit_failed" for e in log.recent())


async def test_metrics_report_sessions(worker: TestClient[Any, Any]) -> None:
    await worker.post("/api/accounts/A1/connect")
    await worker.post("/api/accounts/A2/connect")
    await worker.post("/api/accounts/A2/scan")
    text = await scrape(worker)
    assert "wasp_worker_sessions_active 2.0" in text
    assert "wasp_worker_sessions_max 3.0" in text
    assert 'wasp_worker_sessions{state="CONNECTED"} 1.0' in text
    assert 'wasp_worker_sessions{state="CONNECTING"} 1.0' in text
    assert "wasp_worker_reconnects_total 0.0" in text
    assert "wasp_worker_breaker_trips_total 0.0" in text


async def test_openapi_documents_exactly_the_routes_served(worker: TestClient[Any, Any]) -> None:
    document = await (await worker.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    served = {
        (r.method, r.resource.canonical)
        for r in worker.app.router.routes()
        if r.method not in ("HEAD", "*")
        and r.resource is not None
        and r.resource.canonical != "/openapi.json"
    }
    assert documented == served
    # Every documented path answers any other method itself: 405, with Allow.
    refusing = {r.resource.canonical for r in worker.app.router.routes() if r.method == "*"}
    assert refusing == set(document["paths"])
    refused = await worker.get("/api/accounts/A1/send")
    assert (refused.status, refused.headers["Allow"]) == (405, "POST")
    assert (await refused.json())["ok"] is False
    send = document["paths"]["/api/accounts/{slot}/send"]["post"]
    schema_ref = send["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema_ref.endswith("/SendRequest")
    assert {"202", "400", "409", "413"} <= set(send["responses"])


async def test_openapi_says_what_a_send_needs(worker: TestClient[Any, Any]) -> None:
    document = await (await worker.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    send, schedule = schemas["SendRequest"], schemas["ScheduleRequest"]
    assert send["discriminator"]["propertyName"] == "type"
    kinds = {"text", "image", "video", "audio", "document", "voice", "sticker"}
    assert set(send["discriminator"]["mapping"]) == kinds | {"location", "contact", "poll"}
    assert {"to", "text"} <= set(schemas["TextMessage"]["required"])
    media = schemas["CaptionedMedia"]
    assert {"to", "type"} <= set(media["required"])
    # Exactly one source of the file, said the way the server checks it: by presence.
    assert media["oneOf"] == [{"required": ["media_url"]}, {"required": ["media_base64"]}]
    for name in ("ScheduledText", "ScheduledMedia", "ScheduledPoll", "ScheduledLocation"):
        assert "send_at" in schemas[name]["required"]
    operation = document["paths"]["/api/accounts/{slot}/send"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["$ref"].endswith("/UploadForm")
    assert {"415", "422", "501"} <= set(operation["responses"])
    assert schedule["discriminator"]["mapping"]["text"].endswith("/ScheduledText")
    to = schemas["TextMessage"]["properties"]["to"]
    assert "s\\.whatsapp\\.net" in to["pattern"]
    assert to["maxLength"] == 64
    events = {p["name"]: p for p in document["paths"]["/events"]["get"]["parameters"]}
    assert events["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 5000,
        "default": 1000,
    }
    assert events["wait"]["schema"]["maximum"] == 30
    assert "pattern" in events["after"]["schema"]
    [_, row] = document["paths"]["/api/accounts/{slot}/messages/{id}"]["get"]["parameters"]
    assert row["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/api/accounts/A1/messages/367810758379911380992", "less than or equal to"),
        ("/api/accounts/A1/messages/0", "greater than or equal to 1"),
        ("/api/accounts/A1/messages/abc", "valid integer"),
        ("/events?limit=0", "limit"),
        ("/events?wait=31", "wait"),
        ("/events?after=../x.1", "after"),
        ("/logs?limit=501", "limit"),
    ],
)
async def test_out_of_range_parameters_are_400_with_the_reason(
    worker: TestClient[Any, Any], path: str, reason: str
) -> None:
    response = await worker.get(path)
    assert response.status == 400
    body = await response.json()
    assert body["ok"] is False
    assert reason in body["error"]


def worker_environ(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> WorkerConfig:
    """The worker's settings read from a process environment holding exactly `env`."""
    for name in WorkerConfig.env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return WorkerConfig()


def test_environment_is_read_with_the_spec_names(monkeypatch: pytest.MonkeyPatch) -> None:
    config = worker_environ(
        monkeypatch,
        {
            "SLOT_FROM": "B1",
            "SLOT_TO": "B9",
            "MAX_ACTIVE": "7",
            "MAX_INIT": "3",
            "WARMUP_LIMIT": "4",
            "CONFIGDIR": "/c",
            "WORKDIR": "/w",
            "BACKEND": "simulator",
            "MASTER_INTERNAL_URL": "http://m",
            "MASTER_TOKEN": "s3cr3t-token",
            "PORT": "3001",
            "BAD_MAC_THRESHOLD": "3",
            "BAD_MAC_WINDOW_MS": "10000",
            "BAD_MAC_COOLDOWN_MS": "5000",
            "slot_to": "B2",  # names are case-sensitive: this is not SLOT_TO
        },
    )
    assert (
        str(config.slot_from),
        str(config.slot_to),
        config.max_active,
        config.max_init,
        config.warmup_limit,
        config.port,
    ) == ("B1", "B9", 7, 3, 4, 3001)
    assert (str(config.config_dir), str(config.work_dir)) == ("/c", "/w")
    assert config.master_token == "s3cr3t-token"
    assert config.breaker().threshold == 3
    assert config.breaker().window_s == 10.0
    assert config.breaker().cooldown_s == 5.0
    assert "s3cr3t-token" not in repr(config)  # the token never reaches logs through repr
    for bad in (
        {"SLOT_FROM": "B9", "SLOT_TO": "B1"},
        {"SLOT_FROM": "a1", "SLOT_TO": "A2"},
        {"SLOT_FROM": "A1", "SLOT_TO": "B2"},
    ):
        with pytest.raises(ValueError, match=r"slot|prefix|comes after"):
            worker_environ(monkeypatch, bad)
    with pytest.raises(ValueError, match="invalid shard name '9w'"):
        worker_environ(monkeypatch, {"SLOT_FROM": "A1", "SLOT_TO": "A2", "SHARD_NAME": "9w"})


async def test_pairing_code_while_logging_in_and_refusals(worker: TestClient[Any, Any]) -> None:
    before = await worker.post("/api/accounts/A3/pair", json={"phone": "5511999999999"})
    assert before.status == 409
    assert "connect it first" in (await before.json())["error"]
    await worker.post("/api/accounts/A3/connect")
    for bad in ({"phone": "+5511999999999"}, {"phone": "0119"}, {}, {"phone": "55", "x": 1}):
        refused = await worker.post("/api/accounts/A3/pair", json=bad)
        assert refused.status == 400
    answer = await (
        await worker.post("/api/accounts/A3/pair", json={"phone": "5511999999999"})
    ).json()
    assert answer["ok"] is True
    assert len(answer["code"]) == 8
    again = await (
        await worker.post("/api/accounts/A3/pair", json={"phone": "5511999999999"})
    ).json()
    assert again["code"] == answer["code"]  # deterministic in the simulator
    assert (await worker.post("/api/accounts/A51/pair", json={"phone": "5511999"})).status == 409


async def test_events_are_numbered_kept_and_long_polled(worker: TestClient[Any, Any]) -> None:
    await worker.post("/api/accounts/A3/connect")
    first = await (await worker.get("/events")).json()
    names = [(e["event"], e["payload"]["slot"]) for e in first["events"]]
    assert names[:2] == [("wa:status", "A3"), ("wa:qr", "A3")]
    ids = [e["id"] for e in first["events"]]
    assert [int(i.split(".")[1]) for i in ids] == list(range(1, len(ids) + 1))
    assert all(i.startswith(first["epoch"] + ".") for i in ids)

    # A reader waiting after the last id gets the next event as soon as it happens.
    waiting = asyncio.create_task(worker.get(f"/events?after={ids[-1]}&wait=10"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await worker.post("/api/accounts/A3/scan")
    later = await (await asyncio.wait_for(waiting, 5)).json()
    assert later["events"][0]["payload"] == {
        "slot": "A3",
        "status": "CONNECTED",
        "reason": None,
        "detail": None,
    }
    assert later["gap"] is False

    # A cursor from an earlier worker run (another epoch) gets everything kept.
    again = await (await worker.get("/events?after=abc.7")).json()
    assert [e["id"] for e in again["events"]][: len(ids)] == ids
    for bad in ("7", "abc.", "a.b", "../x.1"):
        response = await worker.get("/events", params={"after": bad})
        assert response.status == 400


async def test_a_stopping_worker_answers_its_pending_long_polls_at_once(tmp_path: Path) -> None:
    server = TestServer(build_app(config(tmp_path), EventLog(stream=io.StringIO())))
    async with TestClient(server, headers=CREDENTIAL) as worker:
        first = await (await worker.get("/events")).json()
        waiting = asyncio.create_task(worker.get(f"/events?after={first['epoch']}.0&wait=30"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        started = time.monotonic()
        await server.close()  # as on SIGTERM: shutdown, then cleanup
        answered = await asyncio.wait_for(waiting, 5)
        assert answered.status == 200
        assert (await answered.json())["events"] == []
        # Without the release, shutdown would wait out the poll's 30 s.
        assert time.monotonic() - started < 3


async def test_a_message_from_the_account_s_own_phone_is_outbound_and_never_unread(
    worker: TestClient[Any, Any],
) -> None:
    for step in ("connect", "scan"):
        assert (await worker.post(f"/api/accounts/A1/{step}")).status == 200
    assert worker.app is not None
    backend = worker.app[SESSIONS].backend
    assert backend.on_inbound is not None
    chat = "5511999999999@s.whatsapp.net"
    common = {"slot": "A1", "chat_id": chat, "chat_type": "direct", "timestamp": 1_795_000_000}
    await backend.on_inbound(
        {**common, "wa_message_id": "IN1", "from": "5511999999999", "to": "me", "body": "hi"}
    )
    await backend.on_inbound(
        {
            **common,
            "wa_message_id": "ME1",
            "from": "5511000000001",
            "to": chat,
            "body": "typed on the phone",
            "from_me": True,
        }
    )
    chats = (await (await worker.get("/api/accounts/A1/chats")).json())["chats"]
    assert [(c["chat_id"], c["unread"], c["messages"]) for c in chats] == [(chat, 1, 2)]


async def test_a_reply_to_a_lid_goes_to_the_phone_number_whatsapp_gave_with_a_message(
    worker: TestClient[Any, Any],
) -> None:
    for step in ("connect", "scan"):
        assert (await worker.post(f"/api/accounts/A1/{step}")).status == 200
    lid, phone = "190000000000123@lid", "5511999999999@s.whatsapp.net"
    unknown = await worker.post("/api/accounts/A1/send", json={"to": lid, "text": "hi"})
    row = (await unknown.json())["message"]["id"]

    async def refused() -> dict[str, Any] | None:
        answer = await worker.get(f"/api/accounts/A1/messages/{row}")
        message: dict[str, Any] = (await answer.json())["message"]
        return message if message["state"] == "failed" else None

    # Neither the map nor the session's store knows it, once its turn comes.
    failed = await eventually_async(refused, "the unknown LID fails")
    assert failed["reason"] == "lid_without_mapping"
    assert worker.app is not None
    backend = worker.app[SESSIONS].backend
    assert backend.on_inbound is not None
    await backend.on_inbound(
        {
            "slot": "A1",
            "chat_id": lid,
            "chat_type": "direct",
            "wa_message_id": "LID1",
            "from": "190000000000123",
            "to": "me",
            "body": "oi",
            "sender_lid": lid,
            "sender_phone_jid": phone,
        }
    )
    reply = await worker.post("/api/accounts/A1/send", json={"to": lid, "text": "hi"})
    assert reply.status == 202
    sent = (await reply.json())["message"]
    assert (sent["to"], sent["reason"]) == (phone, None)
