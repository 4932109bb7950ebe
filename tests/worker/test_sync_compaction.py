"""The sync change log's compaction on a real worker and its real SQLite file: a client
syncing from the start (a walk) still ends with exactly the server's messages and
conversations (read straight from SQL) and turns incremental when caught up; an
incremental client gets only the changes after its cursor, none of the carried items
(oracle: the uncarried rows); a cursor of either kind at or above the horizon gives the
pages it gave, one below it is refused (410) without changing anything, under concurrent
writes too; the rows really go, and the horizon stays across a restart and a migration."""

from __future__ import annotations

import asyncio
import io
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from wasp_worker.app import build_app
from wasp_worker.compaction import DAY_S, Compacted, Compactor
from wasp_worker.data_state import DATABASE
from wasp_worker.db import migrate
from wasp_worker.events import EventLog
from wasp_worker.queue import SCHEMA as QUEUE_V0
from wasp_worker.retention import Pruner
from wasp_worker.state import HISTORY, QUEUE
from wasp_worker.store import ShardStore, migrations

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config
from wasp.retention import Retention
from wasp.slots import Slot
from wasp.worker_api import DATA_CURSOR_PATTERN

Client = TestClient[Any, Any]
A1 = Slot.parse("A1")
BASE = "/api/accounts/A1"
WINDOW_DAYS = 30


@dataclass
class Clock:
    """The compactor's time: the tests move it past the window instead of waiting."""

    t: float = field(default_factory=lambda: time.time() + 1000)

    def __call__(self) -> float:
        return self.t


@dataclass
class Shard:
    worker: Client
    path: Path
    clock: Clock
    compactor: Compactor


async def open_shard(tmp_path: Path) -> AsyncIterator[Shard]:
    app = build_app(config(tmp_path), EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app), headers=CREDENTIAL) as worker:
        clock = Clock()
        # A small batch: a slot's walk takes many database calls, as a big shard's does.
        compactor = Compactor(app[DATABASE], WINDOW_DAYS, EventLog(stream=io.StringIO()), 7, clock)
        yield Shard(worker, tmp_path / "data" / "queue.sqlite3", clock, compactor)


@pytest.fixture
async def shard(tmp_path: Path) -> AsyncIterator[Shard]:
    async for opened in open_shard(tmp_path):
        yield opened


def sql(path: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(query, args).fetchall()


def server_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The oracle: slot A1's live messages and conversations, straight from the tables."""
    messages = {
        row[0]: row[1:]
        for row in sql(
            path,
            "SELECT wa_message_id, body, status, read, edited_at, deleted_at FROM messages "
            "WHERE slot='A1'",
        )
    }
    chats = {
        row[0]: row[1:]
        for row in sql(
            path, "SELECT chat_id, unread, last_message_id FROM conversations WHERE slot='A1'"
        )
    }
    return messages, chats


def client_view(
    messages: dict[str, dict[str, Any]], chats: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    shown = {
        k: (m["body"], m["status"], int(m["read"]), m["edited_at"], m["deleted_at"])
        for k, m in messages.items()
    }
    return shown, {k: (c["unread"], c["last_message_id"]) for k, c in chats.items()}


async def get_page(worker: Client, since: str | None, limit: int) -> tuple[int, dict[str, Any]]:
    params = {"limit": str(limit), **({"since": since} if since is not None else {})}
    answer = await worker.get(f"{BASE}/sync", params=params)
    return answer.status, await answer.json()


@dataclass
class Synced:
    """What a client holds after syncing, and how often it saw each key."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    chats: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)
    next: str | None = None

    def apply(self, page: dict[str, Any]) -> None:
        self.messages.update({m["wa_message_id"]: m for m in page["messages"]})
        self.chats.update({c["chat_id"]: c for c in page["conversations"]})
        for gone in page["deleted"]["messages"]:
            self.messages.pop(gone, None)
        for gone in page["deleted"]["conversations"]:
            self.chats.pop(gone, None)
        self.seen.update(f"m:{m['wa_message_id']}" for m in page["messages"])
        self.seen.update(f"m:{k}" for k in page["deleted"]["messages"])
        self.seen.update(f"c:{c['chat_id']}" for c in page["conversations"])
        self.seen.update(f"c:{k}" for k in page["deleted"]["conversations"])
        self.next = page["next"]


async def sync_from_start(worker: Client, rng: random.Random) -> Synced:
    client = Synced()
    for _ in range(10_000):  # a cursor that does not move on fails, not hangs
        code, page = await get_page(worker, client.next, rng.randint(1, 40))
        assert code == 200, page
        client.apply(page)
        if not page["has_more"]:
            return client
    raise AssertionError("sync never reached its end")


async def past_the_window(shard: Shard) -> Compacted:
    """Make every change so far older than the window, and compact: a mark now, then a pass
    past the window."""
    shard.clock.t += 1
    await shard.compactor.compact()
    shard.clock.t += (WINDOW_DAYS + 1) * DAY_S
    return await shard.compactor.compact()


def fields(n: int, chat_id: str, timestamp: float) -> dict[str, Any]:
    return {
        "slot": "A1",
        "wa_message_id": f"W{n:05d}",
        "chat_id": chat_id,
        "from": chat_id,
        "push_name": f"P{n % 4}",
        "body": f"body {n}",
        "timestamp": timestamp,
    }


async def write(shard: Shard, rng: random.Random, first: int, count: int) -> None:
    """Messages with every kind of change: reads, receipts, edits, deletions for everyone,
    and retention removing a chat's oldest (their keys no longer exist)."""
    app = shard.worker.app
    history, queue = app[HISTORY], app[QUEUE]
    chat_ids = [f"55119{i:08d}@s.whatsapp.net" for i in range(6)]
    for n in range(first, first + count):
        chat_id = rng.choice(chat_ids)
        direction = "in" if rng.random() < 0.7 else "out"
        await history.record(A1, direction, fields(n, chat_id, 1_000.0 + n))
        if rng.random() < 0.1:
            await history.open_chat(A1, rng.choice(chat_ids))
        if direction == "out" and rng.random() < 0.5:
            await queue.receipt(A1, [f"W{n:05d}"], "delivered", chat_id)
        if n > first and rng.random() < 0.08:
            await history.edit(A1, chat_id, f"W{n - 1:05d}", f"edited {n}", 2_000.0 + n)
        if n > first and rng.random() < 0.05:
            await history.revoke(A1, chat_id, f"W{n - 1:05d}", 3_000.0 + n)
        if rng.random() < 0.03:
            pruner = Pruner(
                app[DATABASE],
                shard.path.parent,
                Retention(maxMessagesPerChat=rng.randint(3, 12)),
                EventLog(stream=io.StringIO()),
            )
            await pruner.prune()


def horizon(path: Path) -> int:
    found = sql(path, "SELECT seq FROM sync_horizon WHERE slot='A1'")
    return int(found[0][0]) if found else 0


def seq_of(cursor: str) -> int:
    return int(cursor.removesuffix(".w"))


def changed_after(path: Path, after: int, upto: int | None = None) -> set[str]:
    """The oracle of an incremental page: the items of the uncarried rows (the changes)
    after `after` (and up to `upto`), straight from the table."""
    rows = sql(
        path,
        "SELECT kind, key FROM changes WHERE slot='A1' AND carried=0 AND seq>? AND seq<=?",
        after,
        upto if upto is not None else 2**62,
    )
    return {f"{kind[0]}:{key}" for kind, key in rows}


def carried_items(path: Path) -> set[str]:
    rows = sql(path, "SELECT kind, key FROM changes WHERE slot='A1' AND carried=1")
    return {f"{kind[0]}:{key}" for kind, key in rows}


def page_items(page: dict[str, Any]) -> set[str]:
    return {
        *(f"m:{m['wa_message_id']}" for m in page["messages"]),
        *(f"m:{k}" for k in page["deleted"]["messages"]),
        *(f"c:{c['chat_id']}" for c in page["conversations"]),
        *(f"c:{k}" for k in page["deleted"]["conversations"]),
    }


async def mark(shard: Shard) -> None:
    """A pass that only records a mark: the changes so far become older than a window later."""
    shard.clock.t += 1
    assert await shard.compactor.compact() == Compacted(0, 0)


async def follow(
    worker: Client, client: Synced, rng: random.Random, most: int = 15
) -> list[tuple[str | None, int, dict[str, Any]]]:
    """Pages from the client's cursor to the end, applied to it: (since, limit, page) each."""
    pages = []
    for _ in range(10_000):
        since, limit = client.next, rng.randint(1, most)
        code, page = await get_page(worker, since, limit)
        assert code == 200, page
        client.apply(page)
        pages.append((since, limit, page))
        if not page["has_more"]:
            return pages
    raise AssertionError("sync never reached its end")


async def test_compaction_keeps_every_promise_of_sync(shard: Shard) -> None:
    rng = random.Random(5)
    await write(shard, rng, 0, 150)
    shard.clock.t += 1
    await shard.compactor.compact()  # the mark: the changes so far become the old ones
    middle = sql(shard.path, "SELECT max(seq) FROM changes")[0][0]
    await write(shard, rng, 150, 150)
    # The pages a client got before, from every cursor it was given.
    before: list[tuple[str | None, int, dict[str, Any]]] = []
    since: str | None = None
    while True:
        limit = rng.randint(1, 30)
        code, page = await get_page(shard.worker, since, limit)
        assert code == 200
        before.append((since, limit, page))
        since = page["next"]
        if not page["has_more"]:
            break
    at_middle = sql(shard.path, "SELECT max(seq) FROM changes WHERE slot='A1' AND seq<=?", middle)
    pinned = {  # the cursors on either side of where the horizon will be
        str(at_middle[0][0] + d): await get_page(shard.worker, str(at_middle[0][0] + d), 9)
        for d in (0, 1)
    }

    h = at_middle[0][0]  # the slot's highest seq older than the window: the horizon to be
    log = "SELECT seq, kind, key FROM changes WHERE slot='A1' ORDER BY seq"
    old_log = sql(shard.path, log)
    shard.clock.t += (WINDOW_DAYS + 1) * DAY_S
    done = await shard.compactor.compact()

    assert horizon(shard.path) == h
    new_log = sql(shard.path, log)
    assert done.deleted > 0
    assert len(new_log) == len(old_log) - done.deleted  # a carried row replaces its old one
    # Nothing is left at or below the horizon; above it nothing was touched; after the old
    # end come the carried rows: the latest row at or below the horizon of each live item.
    end = old_log[-1][0]
    assert [r for r in new_log if r[0] <= end] == [r for r in old_log if r[0] > h]
    carried = [r[1:] for r in new_log if r[0] > end]
    assert len(carried) == done.carried
    messages, chats = server_state(shard.path)
    live = {("message", k) for k in messages} | {("conversation", k) for k in chats}
    latest: dict[tuple[str, str], int] = {}
    for seq, kind, key in old_log:
        latest[(kind, key)] = seq
    assert sorted(carried) == sorted(k for k, seq in latest.items() if seq <= h and k in live)
    rows_after = len(new_log)
    # The same cursor gives the same page at or above the horizon ...
    for cursor, (code, page) in pinned.items():
        assert await get_page(shard.worker, cursor, 9) == (code, page)
    refused = same = 0
    for since, limit, page in before:
        code, again = await get_page(shard.worker, since, limit)
        if since is not None and int(since.removesuffix(".w")) < h:
            refused += 1
            # ... and below it 410 with the reason, changing nothing.
            assert code == 410
            assert again == {
                "ok": False,
                "error": f"sync cursor {since} is older than the change log's horizon {h}: "
                "start again without since",
            }
            continue
        if since is None or not page["has_more"]:
            continue  # from the start the page is the compacted log's; the last one grows
        assert code == 200
        for kind, key in (("messages", "wa_message_id"), ("conversations", "chat_id")):
            assert [i[key] for i in again[kind]] == [i[key] for i in page[kind]]
        assert (again["next"], again["has_more"]) == (page["next"], page["has_more"])
        same += 1
    assert refused > 0
    assert same > 0
    assert sql(shard.path, "SELECT count(*) FROM changes")[0][0] == rows_after
    assert horizon(shard.path) == h
    # From the start: exactly the server's set.
    client = await sync_from_start(shard.worker, rng)
    assert client_view(client.messages, client.chats) == server_state(shard.path)

    # Everything past the window: from the start every item comes once, and it is all of them.
    assert (await past_the_window(shard)).carried > 0
    client = await sync_from_start(shard.worker, rng)
    assert client_view(client.messages, client.chats) == server_state(shard.path)
    assert [key for key, count in client.seen.items() if count > 1] == []
    status = await (await shard.worker.get("/data/status")).json()
    assert status["change_rows"] == sql(shard.path, "SELECT count(*) FROM changes")[0][0]
    assert status["sync_horizon"] == {
        "slots": 1,
        "lowest": horizon(shard.path),
        "highest": horizon(shard.path),
    }


async def test_an_incremental_client_gets_what_changed_and_none_of_the_carried_items(
    shard: Shard,
) -> None:
    rng = random.Random(23)
    await write(shard, rng, 0, 120)
    await mark(shard)
    client = await sync_from_start(shard.worker, rng)
    assert client.next is not None
    cursor = client.next  # caught up: an incremental client from here
    assert cursor.isdigit()
    await write(shard, rng, 120, 30)
    shard.clock.t += (WINDOW_DAYS + 1) * DAY_S
    assert (await shard.compactor.compact()).carried > 0
    assert 0 < horizon(shard.path) <= int(cursor)
    await write(shard, rng, 150, 30)
    changed = changed_after(shard.path, int(cursor))
    assert carried_items(shard.path) - changed  # items only carried: they must not come
    client.seen.clear()
    pages = await follow(shard.worker, client, rng)
    assert len(pages) >= 3
    assert all(page["next"].isdigit() for _, _, page in pages)
    assert set(client.seen) == changed
    for since, _, page in pages:  # each page: the changes between its cursors, no other
        assert since is not None
        assert page_items(page) == changed_after(shard.path, int(since), int(page["next"]))
    assert client_view(client.messages, client.chats) == server_state(shard.path)
    # The last cursor is past the carried rows too: it keeps up with the horizon.
    assert int(pages[-1][2]["next"]) == sql(shard.path, "SELECT max(seq) FROM changes")[0][0]


async def test_a_walk_gets_the_server_set_then_turns_incremental_when_caught_up(
    shard: Shard,
) -> None:
    rng = random.Random(29)
    await write(shard, rng, 0, 150)
    assert (await past_the_window(shard)).carried > 0
    await write(shard, rng, 150, 10)  # changes after the carried rows
    walker = Synced()
    pages = await follow(shard.worker, walker, rng, 20)
    assert len(pages) >= 3
    # A walk cursor exactly while more follows; the page that reaches the end gives a plain one.
    assert [page["next"].endswith(".w") for _, _, page in pages] == [
        page["has_more"] for _, _, page in pages
    ]
    assert pages[-1][2]["next"].isdigit()
    assert client_view(walker.messages, walker.chats) == server_state(shard.path)
    # Once each, but for what changed after the carried rows (a chat's summary, say).
    again = {key for key, count in walker.seen.items() if count > 1}
    assert again <= changed_after(shard.path, horizon(shard.path))
    # From now on it is an incremental client: a later compaction's carried rows are not for it.
    cursor = int(pages[-1][2]["next"])
    await mark(shard)
    await write(shard, rng, 160, 20)
    shard.clock.t += (WINDOW_DAYS + 1) * DAY_S
    assert (await shard.compactor.compact()).carried > 0
    assert horizon(shard.path) == cursor
    changed = changed_after(shard.path, cursor)
    assert carried_items(shard.path) - changed
    walker.seen.clear()
    await follow(shard.worker, walker, rng)
    assert set(walker.seen) == changed
    assert client_view(walker.messages, walker.chats) == server_state(shard.path)


async def test_an_idle_client_that_syncs_within_each_window_is_never_refused(
    shard: Shard,
) -> None:
    """Nothing changes, yet each window carries every item again: the incremental page
    that skips them still moves its cursor past them, so the horizon never overtakes it."""
    rng = random.Random(41)
    await write(shard, rng, 0, 40)
    await mark(shard)
    client = await sync_from_start(shard.worker, rng)
    for _ in range(3):
        shard.clock.t += (WINDOW_DAYS + 1) * DAY_S  # the last mark is older than the window
        assert (await shard.compactor.compact()).carried > 0
        code, page = await get_page(shard.worker, client.next, 50)
        assert code == 200, page
        assert (page_items(page), page["has_more"]) == (set(), False)
        assert int(page["next"]) == sql(shard.path, "SELECT max(seq) FROM changes")[0][0]
        client.apply(page)
        await mark(shard)  # the carried rows become the old ones
    assert client_view(client.messages, client.chats) == server_state(shard.path)


def schema_valid_cursors(count: int) -> list[str]:
    """Cursors drawn from the one declared pattern (not from what the tests think it is)."""
    drawn: list[str] = []

    @settings(max_examples=count, derandomize=True, database=None)
    @given(st.from_regex(DATA_CURSOR_PATTERN, fullmatch=True))
    def draw(cursor: str) -> None:
        drawn.append(cursor)

    draw()
    return drawn


async def test_every_schema_valid_cursor_is_a_position_or_gone(shard: Shard) -> None:
    rng = random.Random(43)
    await write(shard, rng, 0, 40)
    assert (await past_the_window(shard)).carried > 0
    h = horizon(shard.path)
    edges = [f"{n}{w}" for n in (0, 1, h - 1, h, h + 1, 10**18 - 1) for w in ("", ".w")]
    for cursor in [*edges, *schema_valid_cursors(150)]:
        code, page = await get_page(shard.worker, cursor, rng.randint(1, 1000))
        assert code == (410 if 0 < seq_of(cursor) < h else 200), (cursor, page)
        if code == 200:
            assert re.fullmatch(DATA_CURSOR_PATTERN, page["next"]), page["next"]
            assert seq_of(page["next"]) >= seq_of(cursor)


async def test_the_same_cursor_gives_the_same_page_for_both_kinds(shard: Shard) -> None:
    rng = random.Random(41)
    await write(shard, rng, 0, 100)
    await mark(shard)  # A
    incremental = await sync_from_start(shard.worker, rng)
    await write(shard, rng, 100, 20)
    await mark(shard)  # B, a second after A
    await write(shard, rng, 120, 20)
    shard.clock.t += WINDOW_DAYS * DAY_S - 0.5  # A is older than the window, B is not
    assert (await shard.compactor.compact()).carried > 0
    await write(shard, rng, 140, 20)
    recorded = {
        "walk": await follow(shard.worker, Synced(), rng),
        "incremental": await follow(shard.worker, incremental, rng),
    }
    b = sql(shard.path, "SELECT seq FROM change_marks ORDER BY at")[-2][0]
    await write(shard, rng, 160, 20)
    shard.clock.t += 1  # B is older than the window too: the horizon moves up to it
    assert (await shard.compactor.compact()).carried > 0
    h = horizon(shard.path)
    assert h == b
    for kind, pages in recorded.items():
        same = refused = 0
        for since, limit, page in pages:
            if since is None:
                continue  # from the start: the compacted log's first page
            code, again = await get_page(shard.worker, since, limit)
            if seq_of(since) < h:
                assert code == 410, (kind, since)
                refused += 1
                continue
            assert code == 200
            # The same items (a message retention deleted since is named in `deleted`
            # instead); the last page grows by what came since.
            assert page_items(page) <= page_items(again)
            if page["has_more"]:
                assert page_items(again) == page_items(page)
                assert (again["next"], again["has_more"]) == (page["next"], True)
                same += 1
        assert same > 0, kind
        assert refused > 0, kind


async def test_concurrent_writes_and_compaction_between_pages_lose_nothing(
    shard: Shard,
) -> None:
    """A walker from the start and an incremental client, each page checked against the
    rows between its cursors (the carried ones only for a walk), both ending with exactly
    the server's set."""
    rng = random.Random(17)
    await write(shard, rng, 0, 60)
    clients = {"walker": Synced(), "incremental": await sync_from_start(shard.worker, rng)}
    done = asyncio.Event()

    async def writer() -> None:
        await write(shard, rng, 60, 400)
        done.set()

    restarts, compacted, pages, skipped = Counter[str](), 0, 0, 0

    async def page_of(name: str, finished: bool) -> bool:
        """One page for the client; True when it is at the end after the writer finished."""
        nonlocal skipped
        client = clients[name]
        since = client.next
        code, page = await get_page(shard.worker, since, rng.randint(1, 60))
        if code == 410:
            assert "start again without since" in page["error"]
            clients[name] = Synced()  # drop what it held, from the start
            restarts[name] += 1
            return False
        assert code == 200, page
        walk = since is None or since.endswith(".w") or int(since) == 0
        lo, hi = seq_of(since or "0"), seq_of(page["next"])
        # Nothing compacts between the page and this read, and writes land after `hi`.
        rows = sql(
            shard.path,
            "SELECT kind, key, carried FROM changes WHERE slot='A1' AND seq>? AND seq<=?",
            lo,
            hi,
        )
        assert page_items(page) == {f"{k[0]}:{key}" for k, key, c in rows if walk or not c}
        skipped += 0 if walk else sum(c for _, _, c in rows)
        client.apply(page)
        return finished and not page["has_more"]

    async def reader() -> None:
        nonlocal compacted, pages
        ended: set[str] = set()
        while len(ended) < len(clients):
            finished = done.is_set()
            for name in clients:
                if name not in ended and await page_of(name, finished):
                    ended.add(name)
            pages += 1
            # A compaction between pages: the window moves a hundredth of itself each time,
            # and twice the clients pause longer than the window.
            shard.clock.t += WINDOW_DAYS * DAY_S / 100
            if pages in (15, 40):
                shard.clock.t += (WINDOW_DAYS + 1) * DAY_S
            compacted += (await shard.compactor.compact()).deleted

    await asyncio.gather(writer(), reader())
    assert restarts["walker"] > 0
    assert restarts["incremental"] > 0
    assert compacted > 0
    # Once more, in an order no scheduling changes (how the writer and the pages interleave
    # above depends on the machine's load): the incremental client at the end of the log,
    # above a mark; that mark then past the window, so the compaction carries what was
    # written before it, and the client's next pages skip every carried row.
    await write(shard, random.Random(18), 460, 20)
    shard.clock.t += 1
    await shard.compactor.compact()  # records a mark after those writes
    marked_at = shard.clock.t
    while not await page_of("incremental", True):
        pass
    before = skipped
    shard.clock.t = marked_at + WINDOW_DAYS * DAY_S + 0.5
    assert (await shard.compactor.compact()).carried > 0
    for name in clients:
        while not await page_of(name, True):
            pass
    assert skipped > before  # the incremental pages did skip carried rows
    for client in clients.values():
        assert client_view(client.messages, client.chats) == server_state(shard.path)


async def test_the_horizon_stays_across_a_restart(tmp_path: Path) -> None:
    rng = random.Random(3)
    async for shard in open_shard(tmp_path):
        await write(shard, rng, 0, 60)
        assert (await past_the_window(shard)).deleted > 0
        h = horizon(shard.path)
        rows = sql(shard.path, "SELECT count(*) FROM changes")[0][0]
    async for shard in open_shard(tmp_path):  # a new worker on the same volume
        assert horizon(shard.path) == h
        assert sql(shard.path, "SELECT count(*) FROM changes")[0][0] == rows
        code, page = await get_page(shard.worker, str(h - 1), 10)
        assert (code, page["error"].split(":")[0]) == (
            410,
            f"sync cursor {h - 1} is older than the change log's horizon {h}",
        )
        assert (await get_page(shard.worker, str(h), 10))[0] == 200
        client = await sync_from_start(shard.worker, rng)
        assert client_view(client.messages, client.chats) == server_state(shard.path)


MESSAGES = [
    ("A1", "M1", "111@s.whatsapp.net", "in", "111", "Ana", 10.0, 0),
    ("A1", "M2", "111@s.whatsapp.net", "in", "111", "Ana B", 30.0, 1),
    ("A1", "M3", "222@s.whatsapp.net", "out", "me", None, 20.0, 1),
    ("A1", "M4", "9@g.us", "in", "333", "Carla", 40.0, 0),
]


@pytest.mark.parametrize("version", [6, 7, 8, 9, 10])
async def test_a_volume_of_an_earlier_version_gets_the_whole_window_from_the_upgrade(
    tmp_path: Path, version: int
) -> None:
    """Rows written before version 11 have no time: they count as changed at the upgrade,
    so they are compacted a window after it, not at once."""
    path = tmp_path / "queue.sqlite3"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(QUEUE_V0)
        migrate(db, migrations(tmp_path)[:6])
        db.executemany(
            "INSERT INTO messages (slot, wa_message_id, chat_id, direction, sender, push_name, "
            "timestamp, read) VALUES (?,?,?,?,?,?,?,?)",
            MESSAGES,
        )
        migrate(db, migrations(tmp_path)[:version])
        assert db.execute("PRAGMA user_version").fetchone()[0] == version
    db.close()
    upgraded = time.time()
    store = ShardStore(path)
    try:
        assert sql(path, "PRAGMA user_version") == [(len(migrations(tmp_path)),)]
        last = sql(path, "SELECT seq FROM sqlite_sequence WHERE name='changes'")[0][0]
        marks = sql(path, "SELECT at, seq FROM change_marks")
        assert len(marks) == 1
        assert marks[0][1] == last
        assert upgraded - 5 <= marks[0][0] <= time.time()
        assert sql(path, "SELECT count(*) FROM sync_horizon") == [(0,)]
        rows = sql(path, "SELECT count(*) FROM changes")[0][0]
        log = EventLog(stream=io.StringIO())
        soon = Compactor(store.db, WINDOW_DAYS, log, now=lambda: upgraded + 29 * DAY_S)
        assert await soon.compact() == Compacted(0, 0)
        assert sql(path, "SELECT count(*) FROM changes")[0][0] == rows
        later = Compactor(store.db, WINDOW_DAYS, log, now=lambda: upgraded + 31 * DAY_S)
        assert (await later.compact()).carried == len(MESSAGES) + 3
        assert sql(path, "SELECT seq FROM sync_horizon WHERE slot='A1'") == [(last,)]
        synced = await store.history.sync(A1, 0, 1000, walk=True)
        assert sorted(m["wa_message_id"] for m in synced["messages"]) == ["M1", "M2", "M3", "M4"]
        assert sorted(c["chat_id"] for c in synced["conversations"]) == [
            "111@s.whatsapp.net",
            "222@s.whatsapp.net",
            "9@g.us",
        ]
    finally:
        store.close()


async def test_the_worker_runs_a_pass_when_it_starts(shard: Shard) -> None:
    """The worker's own compactor (not the tests'): its first pass, at start, leaves a mark
    beside the migration's."""

    async def marked() -> bool:
        return bool(sql(shard.path, "SELECT count(*) FROM change_marks")[0][0] == 2)

    await eventually_async(marked, "the worker's first compaction pass", within_s=10)
