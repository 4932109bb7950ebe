"""The data API's write side, as the backends call it: edits, deletions (tombstones),
history sync, settings from the phone, contacts; and incremental sync that neither skips
nor repeats while all of those happen, across a restart of the worker too. Checked
against the test's own record and the database file read directly."""

from __future__ import annotations

import asyncio
import io
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.conversations import log_changes
from wasp_worker.data_state import CONTACTS, DATABASE
from wasp_worker.db import transaction
from wasp_worker.events import EventLog
from wasp_worker.state import CONVERSATIONS, HISTORY

from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1 = Slot.parse("A1")
BASE = "/api/accounts/A1"
PEER = "5511900000001@s.whatsapp.net"


def inbound(n: int, chat_id: str = PEER, **extra: Any) -> dict[str, Any]:
    return {
        "slot": "A1",
        "wa_message_id": f"W{n:05d}",
        "chat_id": chat_id,
        "from": chat_id,
        "push_name": "Ana",
        "body": f"body {n}",
        "timestamp": 1_000.0 + n,
        **extra,
    }


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def database(tmp_path: Path) -> Path:
    return tmp_path / "data" / "queue.sqlite3"


def events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    found = rows(database(tmp_path), f"SELECT body FROM outbox WHERE type='{kind}' ORDER BY seq")
    return [json.loads(body)["data"] for (body,) in found]


async def search_ids(worker: Client, q: str) -> list[str]:
    answer = await worker.get(f"{BASE}/search", params={"q": q})
    assert answer.status == 200, await answer.text()
    return [hit["wa_message_id"] for hit in (await answer.json())["items"]]


async def test_an_edit_replaces_the_body_everywhere_and_reports_it_once(
    worker: Client, tmp_path: Path
) -> None:
    history = worker.app[HISTORY]
    assert await history.record(A1, "in", inbound(1, body="the old wording"))
    assert await history.edit(A1, PEER, "W00001", "a new phrasing", 2_000.0)
    assert await history.edit(A1, PEER, "W00001", "a new phrasing", 2_000.0)  # again: no-op
    assert await history.edit(A1, PEER, "W00001", "older edit", 1_500.0)  # late: ignored
    assert not await history.edit(A1, PEER, "W99999", "x", 2_000.0)
    assert not await history.edit(A1, "5511900000002@s.whatsapp.net", "W00001", "x", 2_000.0)
    ((body, edited_at),) = rows(database(tmp_path), "SELECT body, edited_at FROM messages")
    assert (body, edited_at) == ("a new phrasing", 2_000.0)
    assert await search_ids(worker, "phrasing") == ["W00001"]
    assert await search_ids(worker, "wording") == []  # the index follows the edit
    edited = events(tmp_path, "message.edited")
    assert [(e["wa_message_id"], e["body"], e["edited_at"]) for e in edited] == [
        ("W00001", "a new phrasing", 2_000.0)
    ]


async def test_a_revoke_leaves_a_tombstone_removes_the_media_and_reports_it(
    worker: Client, tmp_path: Path
) -> None:
    history = worker.app[HISTORY]
    media = tmp_path / "data" / "media" / "A1" / "W00001.jpg"
    media.parent.mkdir(parents=True)
    media.write_bytes(b"\xff\xd8 picture")
    picture = inbound(
        1,
        body="caption words",
        media_type="image",
        media_url="/api/accounts/A1/media/W00001.jpg",
        mime_type="image/jpeg",
        file_size=9,
        file_name="pic.jpg",
    )
    assert await history.record(A1, "in", picture)
    assert await history.record(A1, "in", inbound(2, body="caption kept"))
    assert await history.revoke(A1, PEER, "W00001", 3_000.0)
    assert await history.revoke(A1, PEER, "W00001", 3_001.0)  # known: True, nothing changes
    assert not await history.revoke(A1, PEER, "W99999", 3_000.0)
    assert not media.exists()
    stored = rows(
        database(tmp_path),
        "SELECT body, media_type, media_url, media_mime, media_size, media_name, deleted_at, "
        "read, message_type FROM messages WHERE wa_message_id='W00001'",
    )
    assert stored == [("", None, None, None, None, None, 3_000.0, 1, "image")]
    assert await search_ids(worker, "caption") == ["W00002"]  # a tombstone never matches
    page = await (await worker.get(f"{BASE}/conversations/{PEER}/messages")).json()
    assert [(m["wa_message_id"], m["deleted_at"]) for m in page["items"]] == [
        ("W00002", None),
        ("W00001", 3_000.0),
    ]
    (conversation,) = (await (await worker.get(f"{BASE}/conversations")).json())["items"]
    assert conversation["unread"] == 1  # the deleted one no longer counts
    assert [(e["wa_message_id"], e["deleted_at"]) for e in events(tmp_path, "message.deleted")] == [
        ("W00001", 3_000.0)
    ]
    # An edit of a deleted message is refused: the tombstone stays empty.
    assert not await history.edit(A1, PEER, "W00001", "back", 4_000.0)
    status = await (await worker.get("/data/status")).json()
    assert (status["messages"], status["tombstones"], status["conversations"]) == (2, 1, 1)


async def test_history_sync_stores_each_message_once_without_webhook_events(
    worker: Client, tmp_path: Path
) -> None:
    history = worker.app[HISTORY]
    group = "120363000000000001@g.us"
    assert await history.record(A1, "in", inbound(1))  # seen live first
    received_before = len(events(tmp_path, "message.received"))
    batch = [
        inbound(1),  # and again in the history
        inbound(2, read=True),
        inbound(3),
        inbound(4, from_me=True),
        inbound(5, chat_id=group, sender_phone_jid="5511777@s.whatsapp.net", push_name="Bia"),
        inbound(6, chat_id=group, read=False),
    ]
    chats = [
        {"chat_id": group, "name": "Project X", "pinned": True, "archived": None, "unread": 1},
        {"chat_id": PEER, "name": "Ana Saved", "archived": True, "muted_until": 9e9},
        {"chat_id": "5511900000009@s.whatsapp.net", "name": "No messages", "pinned": True},
    ]
    assert await history.import_history(A1, batch, chats) == 5
    assert await history.import_history(A1, batch, []) == 0
    assert len(events(tmp_path, "message.received")) == received_before
    stored = dict(rows(database(tmp_path), "SELECT wa_message_id, direction || read FROM messages"))
    assert stored == {
        "W00001": "in0",
        "W00002": "in1",
        "W00003": "in0",
        "W00004": "out1",
        "W00005": "in1",  # the phone counts 1 unread in the group: the newest stays unread
        "W00006": "in0",
    }
    listed = {
        c["chat_id"]: c for c in (await (await worker.get(f"{BASE}/conversations")).json())["items"]
    }
    assert set(listed) == {PEER, group}  # a chat without messages has no conversation
    assert (listed[group]["name"], listed[group]["pinned"], listed[group]["unread"]) == (
        "Project X",
        True,
        1,
    )
    assert (listed[PEER]["name"], listed[PEER]["archived"], listed[PEER]["muted_until"]) == (
        "Ana Saved",
        True,
        9e9,
    )
    # A new message in the group keeps its subject (its push names are the members').
    assert await history.record(A1, "in", inbound(7, chat_id=group, push_name="Caio"))
    one = await (await worker.get(f"{BASE}/conversations/{group}")).json()
    assert one["conversation"]["name"] == "Project X"
    assert (await worker.get(f"{BASE}/conversations/5511900000009")).status == 404
    bia = await (await worker.get(f"{BASE}/contacts/5511777")).json()
    assert bia["contact"]["push_name"] == "Bia"


async def test_settings_from_the_phone_apply_to_existing_conversations(worker: Client) -> None:
    history, conversations = worker.app[HISTORY], worker.app[CONVERSATIONS]
    assert await history.record(A1, "in", inbound(1))
    assert await conversations.apply_remote(A1, PEER, pinned=True, muted_until=5_000.0)
    assert not await conversations.apply_remote(A1, PEER, pinned=True)  # nothing changed
    assert await conversations.apply_remote(A1, PEER, muted_until=None)
    assert not await conversations.apply_remote(A1, "5511900000002@s.whatsapp.net", pinned=True)
    found = (await (await worker.get(f"{BASE}/conversations/{PEER}")).json())["conversation"]
    assert (found["pinned"], found["archived"], found["muted_until"]) == (True, False, None)


async def test_contacts_merge_a_lid_into_its_phone_jid_and_are_looked_up_by_either(
    worker: Client,
) -> None:
    contacts, history = worker.app[CONTACTS], worker.app[HISTORY]
    lid, phone = "98765@lid", "5511944440000@s.whatsapp.net"
    assert await contacts.upsert(A1, [{"lid": lid, "push_name": "Dri"}]) == 1
    only_lid = await (await worker.get(f"{BASE}/contacts/{lid}")).json()
    assert (only_lid["contact"]["jid"], only_lid["contact"]["phone_jid"]) == (lid, None)
    # A message names both: one contact, by its phone JID, with the LID and the names.
    message = inbound(1, chat_id=phone, sender_phone_jid=phone, sender_lid=lid, push_name="Drica")
    assert await history.record(A1, "in", message)
    assert await contacts.upsert(A1, [{"phone_jid": phone, "name": "Adriana"}, {}]) == 1
    expected = {
        "jid": phone,
        "phone_jid": phone,
        "lid": lid,
        "name": "Adriana",
        "push_name": "Drica",
    }
    for key in (lid, phone, "5511944440000", "+5511944440000"):
        answer = await worker.get(f"{BASE}/contacts/{key}")
        assert answer.status == 200, key
        found = (await answer.json())["contact"]
        assert {k: found[k] for k in expected} == expected
    looked = await worker.post(
        f"{BASE}/contacts/lookup", json={"ids": [lid, "5511944440000", "1111111@lid", "551100000"]}
    )
    body = await looked.json()
    assert [c["id"] for c in body["found"]] == [lid, "5511944440000"]
    assert {c["jid"] for c in body["found"]} == {phone}
    assert body["not_found"] == ["1111111@lid", "551100000"]
    assert (await worker.get(f"{BASE}/contacts/1111111@lid")).status == 404
    # The conversation takes the saved name over the push name.
    assert (await (await worker.get(f"{BASE}/conversations/{phone}")).json())["conversation"][
        "name"
    ] == "Adriana"
    bad: dict[str, Any]
    for bad in ({"ids": []}, {"ids": ["x"]}, {"ids": ["5511999"] * 501}, {"ids": "5511999"}):
        assert (await worker.post(f"{BASE}/contacts/lookup", json=bad)).status == 400, bad
    assert (await worker.get(f"{BASE}/contacts/not-a-jid")).status == 400


async def _write_everything(app: Any, rng: random.Random, start: int, count: int) -> None:
    """Inserts, edits, revokes, reads and retention's deletions, as fast as they go."""
    history = app[HISTORY]
    chats = [f"55119{i:08d}@s.whatsapp.net" for i in range(6)]
    for n in range(start, start + count):
        chat = rng.choice(chats)
        await history.record(A1, "in" if rng.random() < 0.8 else "out", inbound(n, chat))
        roll = rng.random()
        target = f"W{rng.randrange(start, n + 1):05d}"
        if roll < 0.2:
            await history.edit(A1, chat, target, f"edit {n}", 10_000.0 + n)
        elif roll < 0.3:
            await history.revoke(A1, chat, target, 10_000.0 + n)
        elif roll < 0.35:
            await history.mark_read(A1, chat, None)
        elif roll < 0.38:
            await _retention(app, target)


async def _retention(app: Any, wa_message_id: str) -> None:
    """Delete a message's row with its change, as retention does."""

    def delete(db: sqlite3.Connection) -> None:
        with transaction(db):
            gone = db.execute(
                "DELETE FROM messages WHERE slot='A1' AND wa_message_id=? RETURNING chat_id",
                (wa_message_id,),
            ).fetchall()
            log_changes(db, A1, "message", [wa_message_id] if gone else [])

    await app[DATABASE].call(delete)


class Replica:
    """What a sync client keeps: messages and conversations by key, deletions applied."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.conversations: dict[str, dict[str, Any]] = {}
        self.since: str | None = None

    def apply(self, page: dict[str, Any]) -> None:
        ids = [m["wa_message_id"] for m in page["messages"]]
        assert len(ids) == len(set(ids))
        self.messages.update({m["wa_message_id"]: m for m in page["messages"]})
        self.conversations.update({c["chat_id"]: c for c in page["conversations"]})
        for key in page["deleted"]["messages"]:
            self.messages.pop(key, None)
        for key in page["deleted"]["conversations"]:
            self.conversations.pop(key, None)
        self.since = page["next"]

    async def follow(
        self, worker: Client, rng: random.Random, done: asyncio.Event, pages: int = 10**9
    ) -> None:
        """Page through sync until caught up after `done`, or for `pages` pages."""
        for _ in range(pages):
            finished = done.is_set()
            params = {
                "limit": str(rng.randint(1, 30)),
                **({"since": self.since} if self.since else {}),
            }
            page = await (await worker.get(f"{BASE}/sync", params=params)).json()
            self.apply(page)
            if finished and not page["has_more"]:
                return
            await asyncio.sleep(0)

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        messages = {
            k: (m["body"], m["edited_at"], m["deleted_at"], int(m["read"]), m["chat_id"])
            for k, m in self.messages.items()
        }
        chats = {k: (c["unread"], c["last_message_id"]) for k, c in self.conversations.items()}
        return messages, chats


def server_state(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    path = database(tmp_path)
    messages = {
        row[0]: row[1:]
        for row in rows(
            path, "SELECT wa_message_id, body, edited_at, deleted_at, read, chat_id FROM messages"
        )
    }
    chats = {
        row[0]: row[1:]
        for row in rows(path, "SELECT chat_id, unread, last_message_id FROM conversations")
    }
    return messages, chats


def worker_on(tmp_path: Path) -> Client:
    app = build_app(config(tmp_path), EventLog(stream=io.StringIO()))
    return TestClient(TestServer(app), headers=CREDENTIAL)


async def _write_then(
    app: Any, rng: random.Random, start: int, count: int, done: asyncio.Event
) -> None:
    await _write_everything(app, rng, start, count)
    done.set()


async def test_sync_follows_inserts_edits_revokes_and_deletions_without_gaps_across_a_restart(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    replica = Replica()
    async with worker_on(tmp_path) as worker:
        # Stopped mid-way: the client has read 8 pages (it keeps the cursor of the last one it
        # applied) of far more changes when the worker stops.
        done = asyncio.Event()
        await asyncio.gather(
            _write_then(worker.app, rng, 0, 300, done), replica.follow(worker, rng, done, pages=8)
        )
        assert replica.since is not None
        assert replica.state() != server_state(tmp_path)
    async with worker_on(tmp_path) as worker:  # the same volume
        done = asyncio.Event()
        await asyncio.gather(
            _write_then(worker.app, rng, 300, 300, done), replica.follow(worker, rng, done)
        )
    assert replica.state() == server_state(tmp_path)
    messages, _ = server_state(tmp_path)
    assert any(m[1] is not None for m in messages.values())  # edits happened
    assert any(m[2] is not None for m in messages.values())  # and revokes
    assert len(messages) < 600  # and retention's deletions
