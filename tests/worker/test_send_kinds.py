"""Every content kind through a worker (real app, real SQLite, simulator backend): what
arrives at the recipient, what is refused before queueing (and that nothing is queued
then), the uploaded file's life on the volume, and the send route's own body limit.

The expected fields are written out from the request each test sends (the oracle is
the request, never the code's own translation of it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.backends.simulator import phone_of
from wasp_worker.events import EventLog
from wasp_worker.state import CONFIG, SESSIONS

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config
from wasp.slots import Slot

A1, A2 = Slot.parse("A1"), Slot.parse("A2")
TO_A2, TO_A1 = phone_of(A2), phone_of(A1)
CHAT_A1 = f"{phone_of(A1)}@s.whatsapp.net"  # A1 as A2's chat
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(64)
OGG = b"OggS\x00\x02" + bytes(22) + b"\x13OpusHead" + bytes(40)
PDF = b"%PDF-1.4\n" + b"x" * 100


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def database(worker: TestClient[Any, Any]) -> Path:
    return Path(worker.app[CONFIG].work_dir) / "queue.sqlite3"


def rows(worker: TestClient[Any, Any], sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A read of the shard's database file as it is on disk (its own connection)."""
    with sqlite3.connect(database(worker)) as db:
        return db.execute(sql, args).fetchall()


def outgoing(worker: TestClient[Any, Any]) -> list[str]:
    folder = database(worker).parent / "outgoing"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def online(worker: TestClient[Any, Any], *slots: Slot) -> None:
    for slot in slots:
        assert (await worker.post(f"/api/accounts/{slot}/connect")).status == 200
        assert (await worker.post(f"/api/accounts/{slot}/scan")).status == 200


async def send(worker: TestClient[Any, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    answer = await worker.post("/api/accounts/A1/send", json=body)
    return answer.status, await answer.json()


async def arrived(worker: TestClient[Any, Any], slot: Slot, wa_id: str) -> dict[str, Any]:
    """The recipient's stored copy of a message, once it is there."""

    async def look() -> dict[str, Any] | None:
        found = rows(
            worker,
            "SELECT message_type, body, quoted_id, payload, media_type, media_url, media_mime, "
            "media_size FROM messages WHERE slot=? AND wa_message_id=? AND direction='in'",
            str(slot),
            wa_id,
        )
        if not found:
            return None
        kind, body, quoted, payload, media_type, url, mime, size = found[0]
        return {
            "message_type": kind,
            "body": body,
            "quoted_id": quoted,
            "payload": json.loads(payload) if payload else {},
            "media_type": media_type,
            "media_url": url,
            "mime": mime,
            "size": size,
        }

    return await eventually_async(look, f"{wa_id} at {slot}", within_s=15)


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """The in-process worker, its anti-ban pace out of the way (the simulator bans nobody)."""
    fast = config(
        tmp_path,
        pacing_session_per_minute=60_000,
        pacing_session_burst=1_000,
        pacing_recipient_per_minute=60_000,
        pacing_recipient_burst=1_000,
    )
    app = build_app(fast, EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app), headers=CREDENTIAL) as client:
        yield client


@pytest.fixture
async def pair(worker: TestClient[Any, Any]) -> TestClient[Any, Any]:
    await online(worker, A1, A2)
    return worker


async def test_each_kind_arrives_with_its_fields(pair: TestClient[Any, Any]) -> None:
    worker = pair
    code, first = await send(worker, {"to": TO_A2, "text": "hello @555", "mentions": [TO_A2]})
    assert code == 202, first
    got = await arrived(worker, A2, first["message"]["waMessageId"])
    assert (got["message_type"], got["body"]) == ("text", "hello @555")
    assert got["payload"] == {"mentions": [f"{TO_A2}@s.whatsapp.net"]}

    reply_to = first["message"]["waMessageId"]
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"type": "location", "latitude": -23.5, "longitude": 46.6, "name": "Office"},
            {
                "message_type": "location",
                "payload": {
                    "location": {
                        "latitude": -23.5,
                        "longitude": 46.6,
                        "name": "Office",
                        "address": None,
                    }
                },
            },
        ),
        (
            {"type": "contact", "contacts": [{"name": "Ana; Sales", "phone": "+5511988887777"}]},
            {
                "message_type": "contact",
                "payload": {
                    "contacts": [
                        {
                            "name": "Ana; Sales",
                            "phone": "+5511988887777",
                            "vcard": "BEGIN:VCARD\nVERSION:3.0\nFN:Ana\\; Sales\n"
                            "TEL;type=CELL;waid=5511988887777:+5511988887777\nEND:VCARD",
                        }
                    ]
                },
            },
        ),
        (
            {"type": "poll", "question": "Lunch?", "options": ["yes", "no", "later"]},
            {
                "message_type": "poll",
                "body": "Lunch?",
                "payload": {
                    "poll": {
                        "question": "Lunch?",
                        "options": ["yes", "no", "later"],
                        "selectable_count": 1,
                    }
                },
            },
        ),
        (
            {"type": "image", "media_base64": b64(PNG), "text": "look", "reply_to": reply_to},
            {
                "message_type": "image",
                "body": "look",
                "quoted_id": reply_to,
                "media_type": "image",
                "mime": "image/png",
                "size": len(PNG),
                "bytes": PNG,
            },
        ),
        (
            {"type": "voice", "media_base64": b64(OGG)},
            {"message_type": "voice", "mime": "audio/ogg", "bytes": OGG},
        ),
        (
            {"type": "sticker", "media_base64": b64(WEBP)},
            {"message_type": "sticker", "mime": "image/webp", "bytes": WEBP},
        ),
        (
            {"type": "document", "media_base64": b64(PDF), "file_name": "q.pdf"},
            {"message_type": "document", "mime": "application/pdf", "bytes": PDF},
        ),
        (
            {"type": "text", "text": "see https://example.org", "link_preview": True},
            {"message_type": "text", "body": "see https://example.org", "payload": {}},
        ),
    ]
    for request, expected in cases:
        code, answer = await send(worker, {"to": TO_A2, **request})
        assert code == 202, (request["type"], answer)
        got = await arrived(worker, A2, answer["message"]["waMessageId"])
        data = expected.pop("bytes", None)
        assert {key: got[key] for key in expected} == expected, request["type"]
        if data is not None:  # the recipient's device saved the file, byte for byte
            url = got["media_url"]
            assert url.startswith("/api/accounts/A2/media/"), url
            media = await worker.get(url)
            assert (media.status, await media.read()) == (200, data)
    # Sent and ended: no uploaded file is kept.
    await eventually_async(
        lambda: _async(not rows(worker, "SELECT 1 FROM outbound WHERE state='queued'")),
        "every row sent",
    )
    assert outgoing(worker) == []


async def _async(value: Any) -> Any:
    return value


async def test_a_reply_quotes_what_the_store_has(pair: TestClient[Any, Any]) -> None:
    """A2 answers A1's message: the queue row names its sender and a copy of its text for
    the backend, and A1 receives the reply with its quoted id."""
    worker = pair
    _, first = await send(worker, {"to": TO_A2, "text": "question"})
    wa_id = first["message"]["waMessageId"]
    await arrived(worker, A2, wa_id)
    answer = await worker.post(
        "/api/accounts/A2/send", json={"to": TO_A1, "text": "answer", "reply_to": wa_id}
    )
    assert answer.status == 202
    row = (await answer.json())["message"]
    (payload,) = rows(worker, "SELECT payload FROM outbound WHERE id=?", row["id"])[0]
    assert json.loads(payload) == {
        "reply_to": wa_id,
        "quoted_from_me": False,
        "quoted_sender": CHAT_A1,
        "quoted_body": "question",
        "quoted_type": "text",
    }
    got = await arrived(worker, A1, row["waMessageId"])
    assert (got["body"], got["quoted_id"]) == ("answer", wa_id)
    # The sender's own copy keeps the quote too.
    ((quoted,),) = rows(
        worker,
        "SELECT quoted_id FROM messages WHERE slot='A2' AND wa_message_id=?",
        row["waMessageId"],
    )
    assert quoted == wa_id


BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("unknown reply_to", {"text": "x", "reply_to": "3EB0NOSUCH"}, 404, "reply_to: no message"),
    ("one-option poll", {"type": "poll", "question": "q", "options": ["a"]}, 400, "options"),
    ("repeated options", {"type": "poll", "question": "q", "options": ["a", "a"]}, 400, "unique"),
    (
        "selectable over options",
        {"type": "poll", "question": "q", "options": ["a", "b"], "selectable_count": 3},
        422,
        "selectable_count 3",
    ),
    ("latitude 91", {"type": "location", "latitude": 91, "longitude": 0}, 400, "latitude"),
    ("longitude -181", {"type": "location", "latitude": 0, "longitude": -181}, 400, "longitude"),
    (
        "sticker over 500 KiB",
        {"type": "sticker", "media_base64": b64(WEBP + bytes(500 * 1024))},
        413,
        "limit of 500 KiB",
    ),
    ("png as a sticker", {"type": "sticker", "media_base64": b64(PNG)}, 415, "image/webp"),
    ("pdf as an image", {"type": "image", "media_base64": b64(PDF)}, 415, "image/jpeg"),
    (
        "both url and base64",
        {"type": "image", "media_url": "https://x.example/a.png", "media_base64": b64(PNG)},
        400,
        "exactly one",
    ),
    ("no media at all", {"type": "image"}, 400, "exactly one"),
    ("bad base64", {"type": "image", "media_base64": "AAA"}, 400, "media_base64"),
    ("no contacts", {"type": "contact", "contacts": []}, 400, "contacts"),
    ("caption on a voice note", {"type": "voice", "media_base64": b64(OGG), "text": "x"}, 400, ""),
    ("mention not a number", {"text": "x", "mentions": ["bob"]}, 400, "mentions"),
]


@pytest.mark.parametrize(("case", "body", "status", "says"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_refused_before_queueing(
    pair: TestClient[Any, Any], case: str, body: dict[str, Any], status: int, says: str
) -> None:
    code, answer = await send(pair, {"to": TO_A2, **body})
    assert (code, answer["ok"]) == (status, False), (case, answer)
    assert says in answer["error"], answer
    assert rows(pair, "SELECT count(*) FROM outbound") == [(0,)]
    assert outgoing(pair) == []


async def test_a_kind_the_backend_does_not_send_is_501(pair: TestClient[Any, Any]) -> None:
    pair.app[SESSIONS].backend.sends = frozenset({"text"})
    code, answer = await send(
        pair, {"to": TO_A2, "type": "location", "latitude": 1, "longitude": 2}
    )
    assert (code, answer) == (
        501,
        {"ok": False, "error": "send.location: not supported by the simulator backend"},
    )
    code, _ = await send(pair, {"to": TO_A2, "type": "voice", "media_base64": b64(OGG)})
    assert code == 501
    assert rows(pair, "SELECT count(*) FROM outbound") == [(0,)]
    assert outgoing(pair) == []
    assert (await send(pair, {"to": TO_A2, "text": "still fine"}))[0] == 202


async def test_an_upload_waits_on_disk_until_its_row_ends(worker: TestClient[Any, Any]) -> None:
    """A1 offline: the file is on the volume under its hash while the row waits; the same
    idempotency key answers the first row (one row, one file); sent, the file goes."""
    body = {"to": TO_A2, "type": "image", "media_base64": b64(PNG), "idempotency_key": "img-1"}
    code, first = await send(worker, body)
    assert code == 202, first
    digest = hashlib.sha256(PNG).hexdigest()
    assert outgoing(worker) == [digest]
    assert (database(worker).parent / "outgoing" / digest).read_bytes() == PNG
    code, again = await send(worker, body)
    assert (code, again["message"]["id"]) == (200, first["message"]["id"])
    # The same bytes in another message share the file; it stays until both rows end.
    code, second = await send(worker, {**body, "idempotency_key": "img-2"})
    assert code == 202
    assert rows(worker, "SELECT count(*) FROM outbound") == [(2,)]
    assert outgoing(worker) == [digest]
    (payload,) = rows(worker, "SELECT payload FROM outbound WHERE id=?", first["message"]["id"])
    assert json.loads(payload[0]) == {"file": digest, "mime": "image/png", "file_size": len(PNG)}
    await online(worker, A1, A2)
    for row in (first, second):
        await arrived(worker, A2, row["message"]["waMessageId"])
    await eventually_async(lambda: _async(outgoing(worker) == []), "the file removed")
    # The account's own copy of what it sent stays among its media, served like any other.
    ((url,),) = rows(
        worker,
        "SELECT media_url FROM messages WHERE slot='A1' AND wa_message_id=?",
        first["message"]["waMessageId"],
    )
    assert url.startswith("/api/accounts/A1/media/"), url
    own = await worker.get(url)
    assert (own.status, await own.read()) == (200, PNG)


async def test_kinds_keep_their_order_in_a_chat(pair: TestClient[Any, Any]) -> None:
    bodies: list[dict[str, Any]] = [
        {"type": "location", "latitude": 1, "longitude": 1},
        {"text": "one"},
        {"type": "sticker", "media_base64": b64(WEBP)},
        {"type": "poll", "question": "q", "options": ["a", "b"]},
        {"type": "contact", "contacts": [{"name": "N", "phone": "5511988887777"}]},
        {"type": "voice", "media_base64": b64(OGG)},
    ]
    ids = []
    for body in bodies:
        code, answer = await send(pair, {"to": TO_A2, **body})
        assert code == 202, answer
        ids.append(answer["message"]["waMessageId"])
    for wa_id in ids:
        await arrived(pair, A2, wa_id)
    received = rows(
        pair,
        "SELECT wa_message_id FROM messages WHERE slot='A2' AND direction='in' ORDER BY id",
    )
    assert [r[0] for r in received] == ids
    kinds = rows(
        pair, "SELECT message_type FROM messages WHERE slot='A2' AND direction='in' ORDER BY id"
    )
    assert [k[0] for k in kinds] == ["location", "text", "sticker", "poll", "contact", "voice"]


async def test_a_multipart_upload_is_a_media_message(pair: TestClient[Any, Any]) -> None:
    form = FormData()
    form.add_field("message", json.dumps({"to": TO_A2, "type": "document", "text": "the deal"}))
    form.add_field("file", PDF, filename="deal.pdf", content_type="application/pdf")
    answer = await pair.post("/api/accounts/A1/send", data=form)
    assert answer.status == 202, await answer.text()
    row = (await answer.json())["message"]
    got = await arrived(pair, A2, row["waMessageId"])
    assert (got["message_type"], got["body"], got["mime"]) == (
        "document",
        "the deal",
        "application/pdf",
    )
    assert await (await pair.get(got["media_url"])).read() == PDF


FORMS: list[tuple[str, dict[str, Any] | str, bytes, int]] = [
    ("a text message", {"to": TO_A2, "type": "text", "text": "x"}, PDF, 422),
    ("not JSON", "{nope", PDF, 422),
    ("media named twice", {"to": TO_A2, "type": "image", "media_url": "https://a/b"}, PNG, 422),
    ("sticker over its limit", {"to": TO_A2, "type": "sticker"}, WEBP + bytes(600 * 1024), 413),
    ("wrong type", {"to": TO_A2, "type": "sticker"}, PNG, 415),
    ("invalid destination", {"to": "bob", "type": "image"}, PNG, 422),
]


@pytest.mark.parametrize(("case", "message", "data", "status"), FORMS, ids=[f[0] for f in FORMS])
async def test_a_bad_upload_is_refused_before_queueing(
    pair: TestClient[Any, Any], case: str, message: dict[str, Any] | str, data: bytes, status: int
) -> None:
    form = FormData()
    form.add_field("message", message if isinstance(message, str) else json.dumps(message))
    form.add_field("file", data, filename="f", content_type="application/octet-stream")
    answer = await pair.post("/api/accounts/A1/send", data=form)
    assert answer.status == status, (case, await answer.text())
    assert rows(pair, "SELECT count(*) FROM outbound") == [(0,)]
    assert outgoing(pair) == []


async def test_only_the_send_route_takes_a_large_body(worker: TestClient[Any, Any]) -> None:
    """A 2 MiB document in base64 (2.7 MiB of JSON) is queued; any other route still refuses
    a body over 1 MiB; the send route refuses one over its own limit."""
    big = PDF + bytes(2 << 20)
    code, answer = await send(worker, {"to": TO_A2, "type": "document", "media_base64": b64(big)})
    assert code == 202, answer
    padded = {"chat_id": TO_A2, "limit": 1, "pad": "x" * (2 << 20)}
    assert (await worker.post("/api/accounts/A1/openChat", json=padded)).status == 413
    huge = b64(PDF + bytes(20 << 20))  # 26.7 MiB of base64: over the send route's 24 MiB
    code, _ = await send(worker, {"to": TO_A2, "type": "document", "media_base64": huge})
    assert code == 413
    assert rows(worker, "SELECT count(*) FROM outbound") == [(1,)]
