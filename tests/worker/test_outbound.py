"""Outbound messages: durable, sent only while CONNECTED, idempotent, normalised, delivered."""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.backends.simulator import SimulatorBackend, phone_of, slot_of
from wasp_worker.events import EventLog
from wasp_worker.state import QUEUE, SESSIONS

from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config, scrape
from wasp.messages import DestinationError, normalise
from wasp.slots import Slot

Client = TestClient[Any, Any]


async def login(client: Client, slot: str) -> None:
    await client.post(f"/api/accounts/{slot}/connect")
    await client.post(f"/api/accounts/{slot}/scan")


async def wait_state(client: Client, slot: str, row: int, state: str) -> dict[str, Any]:
    for _ in range(200):
        body = await (await client.get(f"/api/accounts/{slot}/messages/{row}")).json()
        if body["message"]["state"] == state:
            return dict(body["message"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"message {row} never became {state}: {body}")


def test_destinations_are_normalised() -> None:
    assert normalise("5511999999999") == "5511999999999@s.whatsapp.net"
    assert normalise("+5511999999999") == "5511999999999@s.whatsapp.net"
    assert normalise("120363012345678901") == "120363012345678901@g.us"
    assert normalise("5511999999999-1234567890") == "5511999999999-1234567890@g.us"
    assert normalise("123456789@lid") == "123456789@lid"
    for bad in ("", "abc", "../etc/passwd", "55@evil.com", "1" * 40):
        with pytest.raises(DestinationError):
            normalise(bad)


def test_simulated_phone_numbers_round_trip() -> None:
    for text in ("A1", "A50", "ZZ7", "B350"):
        assert slot_of(phone_of(Slot.parse(text))) == Slot.parse(text)
    assert slot_of("5511999999999") is None


async def test_message_is_sent_only_once_connected_and_arrives_at_the_recipient(
    worker: Client,
) -> None:
    await login(worker, "A2")
    await worker.post("/api/accounts/A1/connect")  # CONNECTING: showing a QR
    to = phone_of(Slot.parse("A2"))
    accepted = await worker.post("/api/accounts/A1/send", json={"to": to, "text": "hello"})
    assert accepted.status == 202
    row = (await accepted.json())["message"]["id"]
    await asyncio.sleep(0.5)
    assert (await wait_state(worker, "A1", row, "queued"))["to"] == f"{to}@s.whatsapp.net"
    await worker.post("/api/accounts/A1/scan")
    await wait_state(worker, "A1", row, "sent")
    backend = worker.app[SESSIONS].backend
    assert isinstance(backend, SimulatorBackend)
    assert backend.ledger() == (1, 0)
    text = await scrape(worker)
    assert "wasp_worker_messages_sent_total 1.0" in text
    assert "wasp_worker_messages_received_total 1.0" in text
    logs = (await (await worker.get("/logs?limit=500")).json())["logs"]
    assert any(e["event"] == "wa_message_in" and e["slot"] == "A2" for e in logs)
    assert "hello" not in str(logs)  # message bodies never reach the logs


async def test_idempotency_key_makes_a_retry_return_the_first_message(worker: Client) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    body = {"to": phone_of(Slot.parse("A2")), "text": "once", "idempotency_key": "k-1"}
    first = await worker.post("/api/accounts/A1/send", json=body)
    second = await worker.post("/api/accounts/A1/send", json=body)
    assert (first.status, second.status) == (202, 200)
    row = (await first.json())["message"]["id"]
    assert (await second.json())["message"]["id"] == row
    await wait_state(worker, "A1", row, "sent")
    backend = worker.app[SESSIONS].backend
    assert isinstance(backend, SimulatorBackend)
    assert backend.ledger() == (1, 0)


async def test_lid_without_mapping_fails_with_the_reason_and_mapped_lid_resolves(
    worker: Client,
) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    unmapped = await worker.post("/api/accounts/A1/send", json={"to": "998877@lid", "text": "x"})
    row = (await unmapped.json())["message"]["id"]
    failed = await wait_state(worker, "A1", row, "failed")
    assert failed["reason"] == "lid_without_mapping"
    phone = phone_of(Slot.parse("A2"))
    await worker.app[QUEUE].map_lid(Slot.parse("A1"), "112233@lid", f"{phone}@s.whatsapp.net")
    mapped = await worker.post("/api/accounts/A1/send", json={"to": "112233@lid", "text": "y"})
    sent = await wait_state(worker, "A1", (await mapped.json())["message"]["id"], "sent")
    assert sent["to"] == f"{phone}@s.whatsapp.net"


async def test_unknown_recipient_ends_failed_with_a_reason(worker: Client) -> None:
    await login(worker, "A1")
    response = await worker.post("/api/accounts/A1/send", json={"to": "5511999999999", "text": "x"})
    failed = await wait_state(worker, "A1", (await response.json())["message"]["id"], "failed")
    assert failed["reason"] == "not_a_simulated_account"


async def test_scheduled_message_waits_for_its_time(worker: Client) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    to = phone_of(Slot.parse("A2"))
    missing = await worker.post("/api/accounts/A1/schedule", json={"to": to, "text": "x"})
    assert missing.status == 400
    assert "send_at: Field required" in (await missing.json())["error"]
    response = await worker.post(
        "/api/accounts/A1/schedule", json={"to": to, "text": "later", "send_at": time.time() + 1.0}
    )
    row = (await response.json())["message"]["id"]
    await asyncio.sleep(0.5)
    await wait_state(worker, "A1", row, "queued")
    await wait_state(worker, "A1", row, "sent")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"[1, 2]", "invalid request"),
        (b'{"text": "no destination"}', "to: Field required"),
        (b'{"to": "5511999999999"}', "text: Field required (type text)"),
        (b'{"to": "5511999999999", "type": "gif", "media_url": "http://x"}', "type"),
        (b'{"to": "5511999999999", "type": "image"}', "exactly one of media_url and media_base64"),
        (
            b'{"to": "5511999999999", "type": "document", "media_url": "http://x/a",'
            b' "file_name": "../../etc/passwd"}',
            "file_name",
        ),
        (
            b'{"to": "5511999999999", "type": "image", "media_url": "file:///etc/passwd"}',
            "media_url",
        ),
        (b'{"to": "../../x", "text": "t"}', "invalid destination"),
        (b'{"to": "5511999999999", "text": "t", "extra": 1}', "extra"),
        (b'{"to": " 5511999999999", "text": "t"}', "surrounding whitespace"),
        (b'{"to": "5511999999999", "text": "t", "media_url": "http://x"}', "media_url"),
        (b'{"to": "5511999999999", "text": "t", "send_at": false}', "send_at"),
        (b'{"to": "5511999999999", "text": "t", "send_at": 1e300}', "send_at"),
    ],
)
async def test_bad_send_is_400_with_the_reason_and_queues_nothing(
    worker: Client, body: bytes, reason: str
) -> None:
    response = await worker.post(
        "/api/accounts/A1/send", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    answer = await response.json()
    assert answer["ok"] is False
    assert reason in answer["error"]
    assert await worker.app[QUEUE].depth() == 0
    assert (await worker.get("/api/accounts/A1/messages/1")).status == 404


async def test_too_large_body_is_413(worker: Client) -> None:
    # The send route's own limit (a file in base64 fits under it): 24 MiB.
    huge = b'{"to": "5511999999999", "text": "' + b"x" * (25 << 20) + b'"}'
    response = await worker.post(
        "/api/accounts/A1/send", data=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert await worker.app[QUEUE].depth() == 0


async def test_scheduled_message_survives_a_restart(tmp_path: Path) -> None:
    app_config = config(tmp_path)
    to = phone_of(Slot.parse("A2"))
    async with TestClient(
        TestServer(build_app(app_config, EventLog(stream=io.StringIO()))), headers=CREDENTIAL
    ) as w:
        await login(w, "A1")
        await login(w, "A2")
        response = await w.post(
            "/api/accounts/A1/schedule",
            json={"to": to, "text": "later", "send_at": time.time() + 1.5},
        )
        row = (await response.json())["message"]["id"]
        text = await scrape(w)
    assert "wasp_worker_queue_depth" in text
    async with TestClient(
        TestServer(build_app(app_config, EventLog(stream=io.StringIO()))), headers=CREDENTIAL
    ) as w:
        await w.post("/api/accounts/A1/connect")  # stored auth: CONNECTED at once
        await w.post("/api/accounts/A2/connect")
        await wait_state(w, "A1", row, "sent")


def test_media_names_come_only_from_safe_ids_and_known_types(tmp_path: Path) -> None:
    from wasp_worker import media

    assert media.file_name("3EB0ABC", "image/jpeg") == "3EB0ABC.jpg"
    assert media.file_name("3EB0ABC", "application/x-unknown") == "3EB0ABC.bin"
    assert media.file_name("3EB0ABC", None) == "3EB0ABC.bin"
    for bad in ("../etc/passwd", "a/b", "", "x" * 200, "id.with.dots", "é"):
        with pytest.raises(ValueError, match="unsafe message id"):
            media.file_name(bad, "image/jpeg")
    name = media.save(tmp_path, Slot.parse("A1"), "3EB0ABC", "image/png", b"\x89PNG")
    assert (tmp_path / "media" / "A1" / name).read_bytes() == b"\x89PNG"


def test_every_media_name_the_worker_makes_is_one_its_api_serves() -> None:
    from wasp_worker import media

    from wasp.worker_api import MEDIA_NAME_PATTERN

    for mime in [*media.EXTENSIONS, None, "application/x-unknown"]:
        for message_id in ("3EB0ABC", "x" * 128, "a_b-C9"):
            assert re.fullmatch(MEDIA_NAME_PATTERN, media.file_name(message_id, mime))


async def test_saved_media_is_served_and_bad_names_are_refused(worker: Client) -> None:
    from wasp_worker import media

    work_dir = worker.app[SESSIONS].config.work_dir
    name = media.save(work_dir, Slot.parse("A1"), "3EB0FEED", "image/jpeg", b"jpeg-bytes")
    served = await worker.get(f"/api/accounts/A1/media/{name}")
    assert served.status == 200
    assert await served.read() == b"jpeg-bytes"
    assert (await worker.get("/api/accounts/A1/media/3EB0NONE.jpg")).status == 404
    assert (await worker.get(f"/api/accounts/A2/media/{name}")).status == 404  # other slot
    assert (await worker.get(f"/api/accounts/A99/media/{name}")).status == 409
    for bad in ("..%2F..%2Fqueue.sqlite3", "queue.sqlite3.x", "a.b.c", ".hidden", "..%2Fx.jpg"):
        refused = await worker.get(f"/api/accounts/A1/media/{bad}")
        assert refused.status == 400
        assert (await refused.json())["error"].startswith("invalid name ")


async def test_open_lists_chats_and_open_chat_shows_them_and_marks_read(worker: Client) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    a1, a2 = phone_of(Slot.parse("A1")), phone_of(Slot.parse("A2"))
    for text in ("one", "two"):
        sent = await worker.post("/api/accounts/A1/send", json={"to": a2, "text": text})
        await wait_state(worker, "A1", (await sent.json())["message"]["id"], "sent")

    opened = await worker.post("/api/accounts/A2/open")
    body = await opened.json()
    assert opened.status == 200
    assert body["status"] == "CONNECTED"
    [chat] = body["chats"]
    assert chat["chat_id"] == f"{a1}@s.whatsapp.net"
    assert (chat["unread"], chat["messages"], chat["last_message"]["body"]) == (2, 2, "two")

    shown = await worker.post("/api/accounts/A2/openChat", json={"chat_id": a1})
    messages = (await shown.json())["messages"]
    assert [(m["direction"], m["body"]) for m in messages] == [("in", "one"), ("in", "two")]
    [chat] = (await (await worker.get("/api/accounts/A2/chats")).json())["chats"]
    assert chat["unread"] == 0

    # The sender sees its own side of the conversation, already read.
    outgoing = await worker.post("/api/accounts/A1/openChat", json={"chat_id": a2, "limit": 1})
    assert [(m["direction"], m["body"]) for m in (await outgoing.json())["messages"]] == [
        ("out", "two")
    ]


async def test_open_starts_a_session_and_counts_against_capacity(worker: Client) -> None:
    for slot in ("A1", "A2", "A3"):
        assert (await worker.post(f"/api/accounts/{slot}/open")).status == 200
    full = await worker.post("/api/accounts/A4/open")
    assert full.status == 429
    assert await full.json() == {"ok": False, "error": "worker capacity full"}
    assert (await worker.post("/api/accounts/A51/open")).status == 409
    assert (await worker.post("/api/accounts/A51/openChat", json={"chat_id": "1"})).status == 409


@pytest.mark.parametrize(
    "body",
    [{}, {"chat_id": "../etc"}, {"chat_id": "5511999999999", "limit": 0}, {"chat": "1"}, "[1]"],
)
async def test_bad_open_chat_is_400_with_a_reason(worker: Client, body: Any) -> None:
    if isinstance(body, str):
        response = await worker.post("/api/accounts/A1/openChat", data=body)
    else:
        response = await worker.post("/api/accounts/A1/openChat", json=body)
    assert response.status == 400
    answer = await response.json()
    assert answer["ok"] is False
    assert answer["error"]
