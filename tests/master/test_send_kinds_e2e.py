"""Every content kind end to end: through the master (real processes: three simulator
workers sharing one simulated WhatsApp server), from A1 to A2 on its own shard and to
A11 on another, with the fields each kind carries; large bodies (a base64 image over
the master's 1 MiB, a multipart upload) streamed through; bad input refused with
nothing queued; the idempotency key and a chat's order kept across kinds."""

from __future__ import annotations

import base64
import json
import sqlite3
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wasp_worker.backends.simulator import phone_of

from tests.master.fleet import SECRET, Fleet, log_in, running_fleet
from tests.support.waiting import eventually
from wasp.slots import Slot

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
OGG = b"OggS\x00\x02" + bytes(22) + b"\x13OpusHead" + bytes(40)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(64)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("kinds")) as running:
        for slot in ("A1", "A2", "A11"):
            log_in(running, slot)
        yield running


def db_of(fleet: Fleet, slot: str) -> Path:
    return fleet.root / fleet.shard_of(slot) / "queue.sqlite3"


def query(fleet: Fleet, slot: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_of(fleet, slot)) as db:
        return db.execute(sql, args).fetchall()


def received(fleet: Fleet, slot: str, wa_id: str) -> dict[str, Any]:
    """The recipient shard's stored copy of a message, once it arrived."""

    def look() -> dict[str, Any] | None:
        found = query(
            fleet,
            slot,
            "SELECT message_type, body, quoted_id, payload, media_url, media_mime FROM messages "
            "WHERE slot=? AND wa_message_id=? AND direction='in'",
            slot,
            wa_id,
        )
        if not found:
            return None
        kind, body, quoted, payload, url, mime = found[0]
        return {
            "message_type": kind,
            "body": body,
            "quoted_id": quoted,
            "payload": json.loads(payload) if payload else {},
            "media_url": url,
            "mime": mime,
        }

    return eventually(look, f"{wa_id} at {slot}", timeout=20)


def media_bytes(fleet: Fleet, url: str) -> bytes:
    request = urllib.request.Request(fleet.master_url + url, headers={"x-api-key": SECRET["admin"]})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return bytes(answer.read())


def post_form(
    fleet: Fleet, slot: str, message: dict[str, Any], data: bytes, name: str
) -> tuple[int, dict[str, Any]]:
    """A multipart/form-data send, framed by the standard library's email package rules."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="message"\r\n'
        f"Content-Type: application/json\r\n\r\n{json.dumps(message)}\r\n".encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        data,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    request = urllib.request.Request(
        f"{fleet.master_url}/api/accounts/{slot}/send",
        data=b"".join(parts),
        method="POST",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "x-api-key": SECRET["admin"],
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


def send(fleet: Fleet, body: dict[str, Any], slot: str = "A1") -> dict[str, Any]:
    code, answer = fleet.call("POST", f"/api/accounts/{slot}/send", body)
    assert code == 202, (body.get("type"), code, answer)
    return dict(answer["message"])


@pytest.mark.parametrize("recipient", ["A2", "A11"])
def test_each_kind_arrives_across_the_fleet(fleet: Fleet, recipient: str) -> None:
    to = phone_of(Slot.parse(recipient))
    first = send(fleet, {"to": to, "text": "hello"})
    received(fleet, recipient, first["waMessageId"])
    png = base64.b64encode(PNG).decode()
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"text": "see you", "reply_to": first["waMessageId"], "mentions": [to]},
            {
                "message_type": "text",
                "quoted_id": first["waMessageId"],
                "payload": {"mentions": [f"{to}@s.whatsapp.net"]},
            },
        ),
        (
            {"type": "location", "latitude": 52.37, "longitude": 4.9, "address": "Dam 1"},
            {
                "message_type": "location",
                "payload": {
                    "location": {
                        "latitude": 52.37,
                        "longitude": 4.9,
                        "name": None,
                        "address": "Dam 1",
                    }
                },
            },
        ),
        (
            {"type": "poll", "question": "Q?", "options": ["a", "b", "c"], "selectable_count": 2},
            {
                "message_type": "poll",
                "payload": {
                    "poll": {"question": "Q?", "options": ["a", "b", "c"], "selectable_count": 2}
                },
            },
        ),
        (
            {"type": "contact", "contacts": [{"name": "Ana", "phone": "5511988887777"}]},
            {"message_type": "contact"},
        ),
        (
            {"type": "image", "media_base64": png, "text": "pic"},
            {"message_type": "image", "body": "pic", "mime": "image/png"},
        ),
        (
            {"type": "voice", "media_base64": base64.b64encode(OGG).decode()},
            {"message_type": "voice", "mime": "audio/ogg"},
        ),
        (
            {"type": "sticker", "media_base64": base64.b64encode(WEBP).decode()},
            {"message_type": "sticker", "mime": "image/webp"},
        ),
    ]
    for body, expected in cases:
        row = send(fleet, {"to": to, **body})
        got = received(fleet, recipient, row["waMessageId"])
        assert {key: got[key] for key in expected} == expected, body.get("type")
    card = received(fleet, recipient, _last_of(fleet, recipient, "contact"))
    (contact,) = card["payload"]["contacts"]
    assert contact["name"] == "Ana"
    assert "TEL;type=CELL;waid=5511988887777:+5511988887777" in contact["vcard"]
    image = received(fleet, recipient, _last_of(fleet, recipient, "image"))
    assert media_bytes(fleet, image["media_url"]) == PNG


def _last_of(fleet: Fleet, slot: str, kind: str) -> str:
    ((wa_id,),) = query(
        fleet,
        slot,
        "SELECT wa_message_id FROM messages WHERE slot=? AND direction='in' "
        "AND message_type=? ORDER BY id DESC LIMIT 1",
        slot,
        kind,
    )
    return str(wa_id)


def test_large_bodies_stream_through_the_master(fleet: Fleet) -> None:
    """An image of 2 MiB in base64 (2.7 MiB of JSON, over the master's 1 MiB for other
    routes) and a 3 MiB document uploaded as a form both reach A11 byte for byte."""
    to = phone_of(Slot.parse("A11"))
    big = PNG + bytes(2 << 20)
    row = send(fleet, {"to": to, "type": "image", "media_base64": base64.b64encode(big).decode()})
    image = received(fleet, "A11", row["waMessageId"])
    assert media_bytes(fleet, image["media_url"]) == big
    document = b"%PDF-1.4\n" + bytes(3 << 20)
    code, answer = post_form(
        fleet, "A1", {"to": to, "type": "document", "file_name": "big.pdf"}, document, "big.pdf"
    )
    assert code == 202, answer
    got = received(fleet, "A11", answer["message"]["waMessageId"])
    assert got["mime"] == "application/pdf"
    assert media_bytes(fleet, got["media_url"]) == document
    padded = {"chat_id": to, "limit": 1, "pad": "x" * (2 << 20)}
    assert fleet.call("POST", "/api/accounts/A1/openChat", padded)[0] == 413


def test_bad_input_through_the_master_queues_nothing(fleet: Fleet) -> None:
    to = phone_of(Slot.parse("A2"))
    before = query(fleet, "A1", "SELECT count(*) FROM outbound")
    bad: list[tuple[dict[str, Any], int]] = [
        ({"to": to, "text": "x", "reply_to": "3EB0UNKNOWN"}, 404),
        ({"to": to, "type": "poll", "question": "q", "options": ["only"]}, 400),
        ({"to": to, "type": "location", "latitude": 91, "longitude": 0}, 400),
        ({"to": to, "type": "sticker", "media_base64": base64.b64encode(PNG).decode()}, 415),
        (
            {
                "to": to,
                "type": "sticker",
                "media_base64": base64.b64encode(WEBP + bytes(600 << 10)).decode(),
            },
            413,
        ),
        (
            {
                "to": to,
                "type": "image",
                "media_url": "https://a.example/x.png",
                "media_base64": "AAAA",
            },
            400,
        ),
    ]
    for body, status in bad:
        code, answer = fleet.call("POST", "/api/accounts/A1/send", body)
        assert (code, answer["ok"]) == (status, False), (body, answer)
    assert query(fleet, "A1", "SELECT count(*) FROM outbound") == before
    assert not list((db_of(fleet, "A1").parent / "outgoing").glob("*"))


def test_idempotency_and_order_hold_for_every_kind(fleet: Fleet) -> None:
    to = phone_of(Slot.parse("A11"))
    bodies: list[dict[str, Any]] = [
        {"type": "poll", "question": "q", "options": ["a", "b"]},
        {"type": "location", "latitude": 1, "longitude": 2},
        {"type": "voice", "media_base64": base64.b64encode(OGG).decode()},
        {"type": "contact", "contacts": [{"name": "N", "phone": "5511988887777"}]},
        {"text": "last"},
    ]
    rows = []
    for number, body in enumerate(bodies):
        keyed = {"to": to, "idempotency_key": f"order-{number}", **body}
        first = send(fleet, keyed)
        code, again = fleet.call("POST", "/api/accounts/A1/send", keyed)
        assert (code, again["message"]["id"]) == (200, first["id"])
        rows.append(first["waMessageId"])
    for wa_id in rows:
        received(fleet, "A11", wa_id)
    order = query(
        fleet,
        "A11",
        f"SELECT wa_message_id FROM messages WHERE slot='A11' AND wa_message_id IN "
        f"({','.join('?' * len(rows))}) ORDER BY id",
        *rows,
    )
    assert [o[0] for o in order] == rows
    keys = query(fleet, "A1", "SELECT count(*) FROM outbound WHERE idempotency_key LIKE 'order-%'")
    assert keys == [(len(bodies),)]
