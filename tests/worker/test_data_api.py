"""The per-shard data API: conversations (filtered, sorted, paged; settings patched) and
incremental sync, checked against what the tests themselves stored, never against the
code under test."""

from __future__ import annotations

import asyncio
import io
import random
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.conversations import Filters
from wasp_worker.db import migrate
from wasp_worker.events import EventLog
from wasp_worker.queue import SCHEMA as QUEUE_V0
from wasp_worker.state import HISTORY, QUEUE
from wasp_worker.store import ShardStore, migrations

from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config
from wasp.slots import Slot

A1 = Slot.parse("A1")
BASE = "/api/accounts/A1"


@dataclass
class Chat:
    """What the test stored in one chat: the oracle's source."""

    chat_id: str
    created: int = 0  # the order of its first message: its conversation's id follows it
    messages: list[dict[str, Any]] = field(default_factory=list)  # in insertion order
    read_upto: int = 0  # inbound messages before this index are read
    pinned: bool = False
    archived: bool = False
    tags: list[str] = field(default_factory=list)

    @property
    def group(self) -> bool:
        return self.chat_id.endswith("@g.us")

    def last(self) -> dict[str, Any]:
        return max(enumerate(self.messages), key=lambda m: (m[1]["timestamp"], m[0]))[1]

    def unread(self) -> int:
        return sum(
            1 for i, m in enumerate(self.messages) if m["direction"] == "in" and i >= self.read_upto
        )

    def name(self) -> str | None:
        if self.group:
            return None
        named = [m for m in self.messages if m["direction"] == "in" and m.get("push_name")]
        return max(named, key=lambda m: m["timestamp"])["push_name"] if named else None


def fields(n: int, chat_id: str, timestamp: float, push_name: str | None) -> dict[str, Any]:
    return {
        "slot": "A1",
        "wa_message_id": f"W{n:05d}",
        "chat_id": chat_id,
        "from": chat_id,
        "push_name": push_name,
        "body": f"body {n}",
        "timestamp": timestamp,
    }


def sort_key(chat: Chat, sort: str) -> tuple[Any, ...]:
    """The order of a listing: ties go by the conversation's id (descending with a
    descending order), which follows the order of the chats' first messages."""
    last = chat.last()["timestamp"]
    if sort == "last":
        return (-last, -chat.created)
    if sort == "unread":
        return (-chat.unread(), -last, -chat.created)
    name = chat.name()
    return (name is None, name or "", chat.created)


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(config(tmp_path), EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app), headers=CREDENTIAL) as client:
        yield client


async def fill(worker: TestClient[Any, Any], rng: random.Random) -> dict[str, Chat]:
    """Random chats and messages, some read, some patched, recorded in the oracle."""
    history = worker.app[HISTORY]
    names = ["Ana", "bruno", "Carla", "ana maria", None]
    chats = {
        chat_id: Chat(chat_id)
        for chat_id in [f"55119{i:08d}@s.whatsapp.net" for i in range(18)]
        + [f"1203630{i:012d}@g.us" for i in range(6)]
    }
    stamps = rng.sample(range(1_000_000, 2_000_000), 240)
    for n, stamp in enumerate(stamps):
        chat = chats[rng.choice(list(chats))]
        if not chat.messages:
            chat.created = n
        direction = "in" if rng.random() < 0.8 else "out"
        record = fields(n, chat.chat_id, float(stamp), rng.choice(names))
        assert await history.record(A1, direction, record)
        chat.messages.append({**record, "direction": direction})
        if rng.random() < 0.05:
            await history.open_chat(A1, chat.chat_id)
            chat.read_upto = len(chat.messages)
    for chat in chats.values():
        body: dict[str, Any] = {}
        if rng.random() < 0.3:
            chat.pinned = body["pinned"] = True
        if rng.random() < 0.3:
            chat.archived = body["archived"] = True
        if rng.random() < 0.4:
            chat.tags = body["tags"] = rng.sample(["vip", "lead", "support"], rng.randint(1, 2))
        answer = await worker.patch(f"{BASE}/conversations/{chat.chat_id}", json=body)
        assert answer.status == 200, await answer.text()
    return chats


async def listing(worker: TestClient[Any, Any], query: dict[str, str], limit: int) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        params = {**query, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        answer = await worker.get(f"{BASE}/conversations", params=params)
        assert answer.status == 200, await answer.text()
        page = await answer.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_conversations_filter_sort_and_page_as_the_stored_messages_say(
    worker: TestClient[Any, Any],
) -> None:
    chats = await fill(worker, random.Random(7))
    everything = {item["chat_id"]: item for item in await listing(worker, {}, 500)}
    assert set(everything) == set(chats)
    for chat in chats.values():
        item = everything[chat.chat_id]
        assert item["chat_type"] == ("group" if chat.group else "direct")
        assert item["last_message_id"] == chat.last()["wa_message_id"]
        assert item["last_timestamp"] == chat.last()["timestamp"]
        assert item["unread"] == chat.unread()
        assert item["name"] == chat.name()
        assert (item["pinned"], item["archived"]) == (chat.pinned, chat.archived)
        assert item["tags"] == chat.tags
        assert item["muted_until"] is None
    filters: list[tuple[dict[str, str], Any]] = [
        ({}, lambda c: True),
        ({"unread": "true"}, lambda c: c.unread() > 0),
        ({"unread": "false"}, lambda c: c.unread() == 0),
        ({"pinned": "true"}, lambda c: c.pinned),
        ({"archived": "false"}, lambda c: not c.archived),
        ({"tag": "vip"}, lambda c: "vip" in c.tags),
        ({"q": "ANA"}, lambda c: "ana" in (c.name() or "").lower()),
        ({"unread": "true", "tag": "lead"}, lambda c: c.unread() > 0 and "lead" in c.tags),
    ]
    for query, keep in filters:
        for sort in ("last", "unread", "name"):
            expected = sorted(
                (c for c in chats.values() if keep(c)), key=lambda c: sort_key(c, sort)
            )
            for limit in (1, 4, 500):
                got = await listing(worker, {**query, "sort": sort}, limit)
                assert [i["chat_id"] for i in got] == [c.chat_id for c in expected], (
                    query,
                    sort,
                    limit,
                )


async def test_a_patch_round_trips_and_bad_input_is_refused(
    worker: TestClient[Any, Any],
) -> None:
    history = worker.app[HISTORY]
    chat = "5511900000001@s.whatsapp.net"
    assert await history.record(A1, "in", fields(1, chat, 1_000.0, "Ana"))
    url = f"{BASE}/conversations/{chat}"
    answer = await worker.patch(url, json={"pinned": True, "tags": ["b", "a", "b"]})
    assert answer.status == 200
    assert (await answer.json())["conversation"]["tags"] == ["b", "a"]
    await worker.patch(url, json={"muted_until": 5_000, "archived": True})
    (item,) = (await (await worker.get(f"{BASE}/conversations")).json())["items"]
    assert (item["pinned"], item["archived"], item["muted_until"]) == (True, True, 5000.0)
    assert item["tags"] == ["b", "a"]
    # By phone digits too: the path takes what a destination may be.
    cleared = await worker.patch(f"{BASE}/conversations/5511900000001", json={"muted_until": None})
    assert (await cleared.json())["conversation"]["muted_until"] is None
    assert (await cleared.json())["conversation"]["pinned"] is True  # absent: kept
    for bad in (
        {"pinned": None},
        {"pinned": "yes"},
        {"tags": None},
        {"tags": [""]},
        {"tags": ["x"] * 33},
        {"muted_until": -1},
        {"colour": "red"},
    ):
        refused = await worker.patch(url, json=bad)
        assert refused.status == 400, bad
        assert "invalid request" in (await refused.json())["error"]
    missing = await worker.patch(f"{BASE}/conversations/5511900000002", json={"pinned": True})
    assert missing.status == 404
    assert (await worker.patch(f"{BASE}/conversations/not-a-chat", json={})).status == 400
    for cursor in (
        "zz",
        "-1",
        "1.5",
        "9" * 19,
        "1.0_0_z_A1_x",
        "1_0_h0_A1_1",
        ".w",
        "1.w.w",
        "1.W",
    ):
        for path, name in (("conversations", "cursor"), ("sync", "since")):
            answer = await worker.get(f"{BASE}/{path}", params={name: cursor})
            assert answer.status == 400, (path, cursor)
            assert name in (await answer.json())["error"]


async def test_sync_under_concurrent_writes_neither_skips_nor_repeats(
    worker: TestClient[Any, Any], tmp_path: Path
) -> None:
    app = worker.app
    history, queue = app[HISTORY], app[QUEUE]
    rng = random.Random(11)
    chat_ids = [f"55119{i:08d}@s.whatsapp.net" for i in range(8)]
    done = asyncio.Event()

    async def write() -> None:
        for n in range(400):
            chat_id = rng.choice(chat_ids)
            direction = "in" if rng.random() < 0.7 else "out"
            await history.record(A1, direction, fields(n, chat_id, 1_000.0 + n, f"P{n % 5}"))
            if rng.random() < 0.15:
                await history.open_chat(A1, rng.choice(chat_ids))
            if direction == "out" and rng.random() < 0.5:
                await queue.receipt(A1, [f"W{n:05d}"], "delivered", chat_id)
        done.set()

    messages: dict[str, dict[str, Any]] = {}
    conversations: dict[str, dict[str, Any]] = {}
    pages: list[tuple[str | None, int, dict[str, Any]]] = []

    async def read() -> None:
        since: str | None = None
        while True:
            finished = done.is_set()
            limit = rng.randint(1, 25)
            params = {"limit": str(limit), **({"since": since} if since else {})}
            page = await (await worker.get(f"{BASE}/sync", params=params)).json()
            pages.append((since, limit, page))
            ids = [m["wa_message_id"] for m in page["messages"]]
            chats = [c["chat_id"] for c in page["conversations"]]
            assert len(ids) == len(set(ids))
            assert len(chats) == len(set(chats))
            assert len(ids) + len(chats) <= limit
            messages.update({m["wa_message_id"]: m for m in page["messages"]})
            conversations.update({c["chat_id"]: c for c in page["conversations"]})
            since = page["next"]
            if finished and not page["has_more"]:
                return

    await asyncio.gather(write(), read())
    last = pages[-1][2]
    tail = await (await worker.get(f"{BASE}/sync", params={"since": last["next"]})).json()
    assert (tail["messages"], tail["conversations"], tail["has_more"]) == ([], [], False)
    assert tail["next"] == last["next"]  # nothing after the end: the cursor stays

    db = sqlite3.connect(tmp_path / "data" / "queue.sqlite3")
    try:
        server_messages = {
            row[0]: row[1:]
            for row in db.execute("SELECT wa_message_id, read, status, chat_id FROM messages")
        }
        server_chats = {
            row[0]: row[1:]
            for row in db.execute("SELECT chat_id, unread, last_message_id FROM conversations")
        }
    finally:
        db.close()
    assert len(server_messages) == 400
    client_messages = {k: (int(m["read"]), m["status"], m["chat_id"]) for k, m in messages.items()}
    assert client_messages == server_messages
    client_chats = {k: (c["unread"], c["last_message_id"]) for k, c in conversations.items()}
    assert client_chats == server_chats
    # The same cursor names the same changes: a full page (more followed) the same ones,
    # the page that reached the end then those and any made since, after them.
    for since, limit, page in rng.sample(pages, min(60, len(pages))):
        params = {"limit": str(limit), **({"since": since} if since else {})}
        again = await (await worker.get(f"{BASE}/sync", params=params)).json()
        for kind, key in (("messages", "wa_message_id"), ("conversations", "chat_id")):
            before = [item[key] for item in page[kind]]
            now = [item[key] for item in again[kind]]
            assert now[: len(before)] == before
            if page["has_more"]:
                assert now == before
        if page["has_more"]:
            assert again["next"] == page["next"]


async def test_the_migration_backfills_conversations_and_sync_from_older_messages(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.sqlite3"
    old = migrations(tmp_path)[:6]  # the database as the worker before conversations left it
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(QUEUE_V0)
    migrate(db, old)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(old)
    rows = [
        ("A1", "M1", "111@s.whatsapp.net", "in", "111", "Ana", 10.0, 0),
        ("A1", "M2", "111@s.whatsapp.net", "in", "111", "Ana B", 30.0, 1),
        ("A1", "M3", "222@s.whatsapp.net", "out", "me", None, 20.0, 1),
        ("A1", "M4", "222@s.whatsapp.net", "in", "222", None, 5.0, 0),
        ("A1", "M5", "9@g.us", "in", "333", "Carla", 40.0, 0),
        ("A2", "M6", "111@s.whatsapp.net", "in", "111", "Other", 50.0, 0),
    ]
    db.executemany(
        "INSERT INTO messages (slot, wa_message_id, chat_id, direction, sender, push_name, "
        "timestamp, read) VALUES (?,?,?,?,?,?,?,?)",
        rows,
    )
    db.close()

    store = ShardStore(path)
    try:
        listed, _ = await store.conversations.page([A1], Filters(), "last", None, 50)
        synced = await store.history.sync(A1, 0, 1000, walk=True)
        other = await store.history.sync(Slot.parse("A2"), 0, 1000, walk=True)
    finally:
        store.close()
    summary = [
        (c["chat_id"], c["chat_type"], c["name"], c["last_message_id"], c["unread"]) for c in listed
    ]
    assert summary == [
        ("9@g.us", "group", None, "M5", 1),
        ("111@s.whatsapp.net", "direct", "Ana B", "M2", 1),
        ("222@s.whatsapp.net", "direct", None, "M3", 1),
    ]
    assert [m["wa_message_id"] for m in synced["messages"]] == ["M1", "M2", "M3", "M4", "M5"]
    assert {c["chat_id"] for c in synced["conversations"]} == {c[0] for c in summary}
    assert synced["has_more"] is False
    assert [m["wa_message_id"] for m in other["messages"]] == ["M6"]
