"""The data API's read side against oracles the tests build from what they stored:
keyed conversation pages that stay right while chats move, a chat's messages paged both
ways while messages arrive, full-text search against a term matcher of the test's own,
unread counts, read marks that reach WhatsApp, and the range operations across slots."""

from __future__ import annotations

import asyncio
import io
import math
import random
import sqlite3
import unicodedata
from contextlib import closing
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from wasp_worker import history as history_rows
from wasp_worker import message_pages
from wasp_worker.app import build_app
from wasp_worker.backends.simulator import phone_of
from wasp_worker.db import transaction
from wasp_worker.events import EventLog
from wasp_worker.message_pages import SearchFilters
from wasp_worker.state import HISTORY
from wasp_worker.store import ShardStore

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_outbound import login
from tests.worker.test_receipts import statuses
from tests.worker.test_worker_http import config
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1 = Slot.parse("A1")
BASE = "/api/accounts/A1"


def message(
    n: int, chat_id: str, timestamp: float, body: str = "", slot: str = "A1", **extra: Any
) -> dict[str, Any]:
    return {
        "slot": slot,
        "wa_message_id": f"W{n:06d}",
        "chat_id": chat_id,
        "from": chat_id,
        "push_name": None,
        "body": body or f"body {n}",
        "timestamp": timestamp,
        **extra,
    }


async def pages(worker: Client, path: str, params: dict[str, str], name: str) -> list[Any]:
    """Every item of a paged listing, following `next_cursor` in parameter `name`."""
    items: list[Any] = []
    cursor = None
    while True:
        answer = await worker.get(path, params={**params, **({name: cursor} if cursor else {})})
        assert answer.status == 200, await answer.text()
        page = await answer.json()
        assert len(page["items"]) <= int(params.get("limit", "50"))
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_conversation_pages_neither_repeat_nor_skip_while_new_chats_arrive(
    worker: Client,
) -> None:
    history = worker.app[HISTORY]
    chats = [f"55119{i:08d}@s.whatsapp.net" for i in range(40)]
    for n, chat in enumerate(chats):  # several share a timestamp: the id breaks ties
        assert await history.record(A1, "in", message(n, chat, 1_000.0 + n // 3))
    seen: list[str] = []
    cursor = None
    newcomer = 1_000
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (await worker.get(f"{BASE}/conversations", params=params)).json()
        seen += [item["chat_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # A new chat lands at the top between pages: an offset would shift everything by one.
        newcomer += 1
        chat = f"55118{newcomer:08d}@s.whatsapp.net"
        assert await history.record(A1, "in", message(newcomer, chat, 5_000.0 + newcomer))
    expected = sorted(chats, key=lambda c: (-(1_000.0 + chats.index(c) // 3), -chats.index(c)))
    assert seen == expected


async def test_a_chats_messages_page_both_ways_without_gap_or_overlap_while_messages_arrive(
    worker: Client,
) -> None:
    history = worker.app[HISTORY]
    chat = "5511900000001@s.whatsapp.net"
    rng = random.Random(3)
    # The oracle: each message's (timestamp, order stored); ids follow the order stored.
    stored: dict[str, tuple[float, int]] = {}
    for n in range(120):
        stamp = float(rng.randrange(1, 40))  # many ties (0 would be "now")
        assert await history.record(A1, "in", message(n, chat, stamp))
        stored[f"W{n:06d}"] = (stamp, n)
    before = set(stored)

    async def arrive() -> None:
        """Messages keep arriving, older and newer, while the client pages."""
        for n in range(120, 220):
            stamp = float(rng.randrange(1, 50))
            assert await history.record(A1, "in", message(n, chat, stamp))
            stored[f"W{n:06d}"] = (stamp, n)
            await asyncio.sleep(0)

    async def read(order: str) -> list[str]:
        path = f"{BASE}/conversations/{chat}/messages"
        if order == "newest_first":
            return [m["wa_message_id"] for m in await pages(worker, path, {"limit": "7"}, "before")]
        items = await pages(worker, path, {"limit": "7", "after": "0_0_z_A1_0"}, "after")
        return [m["wa_message_id"] for m in items]

    newest, oldest, _ = await asyncio.gather(read("newest_first"), read("oldest_first"), arrive())
    for got, down in ((newest, True), (oldest, False)):
        assert len(got) == len(set(got))  # never twice
        assert set(got) >= before  # each one there before the paging began
        assert got == sorted(got, key=stored.__getitem__, reverse=down)  # in order
    # Read again when nothing moves: exactly the oracle's order, both ways.
    expected = sorted(stored, key=stored.__getitem__, reverse=True)
    assert await read("newest_first") == expected
    assert await read("oldest_first") == expected[::-1]


async def test_messages_between_two_cursors_and_cursors_no_message_has(worker: Client) -> None:
    history = worker.app[HISTORY]
    chat = "5511900000001@s.whatsapp.net"
    for n in range(10):
        assert await history.record(A1, "in", message(n, chat, 100.0 + n))
    path = f"{BASE}/conversations/{chat}/messages"
    page = await (
        await worker.get(path, params={"after": "102.5_0_z_A1_0", "before": "106_0_z_A1_0"})
    ).json()
    assert [m["wa_message_id"] for m in page["items"]] == ["W000003", "W000004", "W000005"]
    assert page["order"] == "oldest_first"
    # A pattern-valid cursor of another slot, of no message, of a far future: positions.
    for cursor in (
        "99999999_7_h00ff_ZZ9_123",
        "0_0_z_A1_0",
        "1.5_3_hc3_B7_999999999999999999",
        "9e+999_0_z_A1_9999999999999999999",
        "1.5e-300_0_z_A1_1",
    ):
        answer = await worker.get(path, params={"before": cursor})
        assert answer.status == 200, cursor
    assert (await worker.get(path, params={"before": "1_0_x_A1_1"})).status == 400


# Words of the generated corpus: accents, case, and FTS5's own syntax as plain text.
VOCABULARY = [
    "café",
    "Cafe",
    "CAFÉ",
    "ação",
    "acao",
    "pão",
    "Pao",
    "über",
    "uber",
    "niño",
    "nino",
    "São",
    "sao",
    "paulo",
    "NEAR",
    "near",
    "AND",
    "or",
    "NOT",
    "hello",
    "help",
    "helping",
    "world",
    "x1",
    "2024",
    "çedilha",
    "cedilha",
    "cafe\u0301s",  # decomposed: an accent as a mark of its own, inside the word
    "Sa\u0303o",
]
PUNCTUATION = [" ", " ", " ", ", ", ". ", " - ", ' "', '" ', " * ", " (", ") ", ":", "^", "'"]


def fold(word: str) -> str:
    """The oracle's folding: lower case, accents dropped."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def tokens(text: str) -> list[str]:
    """The oracle's words: runs of letters, digits and accents."""
    found, word = [], ""
    for char in text:
        if unicodedata.category(char)[0] in "LNM":
            word += char
        elif word:
            found.append(fold(word))
            word = ""
    return [*found, fold(word)] if word else found


def matches(body: str, query: str) -> bool:
    """Every word of the query is a word of the body; the last may start one."""
    wanted, present = tokens(query), tokens(body)
    if not wanted:
        return False
    *whole, last = wanted
    return all(w in present for w in whole) and any(p.startswith(last) for p in present)


def sentence(rng: random.Random) -> str:
    words = rng.choices(VOCABULARY, k=rng.randint(1, 7))
    return "".join(w + rng.choice(PUNCTUATION) for w in words).strip() or "x"


async def test_search_finds_what_a_term_matcher_finds_newest_first_and_pages(
    worker: Client,
) -> None:
    history = worker.app[HISTORY]
    rng = random.Random(17)
    chats = [f"55119{i:08d}@s.whatsapp.net" for i in range(4)]
    corpus: dict[str, dict[str, Any]] = {}
    for n in range(300):
        chat = rng.choice(chats)
        kind = rng.choice(["text", "text", "image"])
        record = message(n, chat, float(rng.randrange(1, 200)), sentence(rng), message_type=kind)
        assert await history.record(A1, "in", record)
        corpus[record["wa_message_id"]] = {**record, "order": n}
    for n in rng.sample(range(300), 40):  # edited: the new words count, the old do not
        wa_id = f"W{n:06d}"
        body = sentence(rng)
        assert await history.edit(A1, corpus[wa_id]["chat_id"], wa_id, body, 9_000.0)
        corpus[wa_id]["body"] = body
    for n in rng.sample(range(300), 30):  # deleted: never found
        wa_id = f"W{n:06d}"
        assert await history.revoke(A1, corpus[wa_id]["chat_id"], wa_id, 9_000.0)
        corpus[wa_id]["body"] = ""
    queries = [
        *rng.sample(VOCABULARY, 12),
        "caf",
        "cafe\u0301s",
        "cafés",
        "sa\u0303o paulo",
        "he",
        "sao paulo",
        "NEAR(",
        '"hello',
        "hello*",
        "-world",
        "(ação)",
        "x1:",
        "^near",
        "AND OR",
        'cafe" OR "pao',
        "NEAR(hello world)",
        "  ",
        "***",
        "über-cafe",
    ]
    filters: list[tuple[dict[str, str], Any]] = [
        ({}, lambda m: True),
        ({"chat_id": chats[1]}, lambda m: m["chat_id"] == chats[1]),
        ({"since": "50", "until": "120"}, lambda m: 50 <= m["timestamp"] < 120),
        ({"type": "image"}, lambda m: m["message_type"] == "image"),
    ]
    for query in queries:
        for params, keep in filters:
            expected = sorted(
                (m for m in corpus.values() if matches(m["body"], query) and keep(m)),
                key=lambda m: (m["timestamp"], m["order"]),
                reverse=True,
            )
            limit = rng.choice([1, 5, 100])
            got = await pages(
                worker, f"{BASE}/search", {"q": query, "limit": str(limit), **params}, "cursor"
            )
            assert [h["wa_message_id"] for h in got] == [m["wa_message_id"] for m in expected], (
                query,
                params,
            )
            for hit in got:
                assert "[" in hit["snippet"]
                assert "]" in hit["snippet"]


async def test_search_never_fails_on_any_text(worker: Client) -> None:
    history = worker.app[HISTORY]
    assert await history.record(A1, "in", message(1, "5511900000001@s.whatsapp.net", 1.0))
    rng = random.Random(23)
    alphabet = "\"*-()^:+{}[]NEAROTD \\'.,;!?~@#$%&|/<>=`\u00e9\u0301\u200b\U0001f600a1"
    for _ in range(300):
        q = "".join(rng.choices(alphabet, k=rng.randint(1, 30)))
        answer = await worker.get(f"{BASE}/search", params={"q": q})
        assert answer.status == 200, (q, await answer.text())


async def test_unread_counts_muted_and_archived_chats_apart(worker: Client) -> None:
    history = worker.app[HISTORY]
    counts = {"a": 3, "b": 2, "c": 4, "d": 1}
    chat_of = {name: f"5511900000{i:03d}@s.whatsapp.net" for i, name in enumerate(counts)}
    n = 0
    for name, count in counts.items():
        for _ in range(count):
            n += 1
            assert await history.record(A1, "in", message(n, chat_of[name], float(n)))
    assert await history.record(A1, "out", message(99, chat_of["a"], 100.0))
    await worker.patch(f"{BASE}/conversations/{chat_of['b']}", json={"muted_until": 9e10})
    await worker.patch(f"{BASE}/conversations/{chat_of['c']}", json={"archived": True})
    await worker.patch(f"{BASE}/conversations/{chat_of['d']}", json={"muted_until": 1.0})  # past
    body = await (await worker.get(f"{BASE}/unread")).json()
    assert (body["total_messages"], body["total_conversations"]) == (3 + 1, 2)
    assert body["muted_or_archived"] == {"messages": 2 + 4, "conversations": 2}
    flags = {c["chat_id"]: (c["unread"], c["muted"], c["archived"]) for c in body["chats"]}
    assert flags == {
        chat_of["a"]: (3, False, False),
        chat_of["b"]: (2, True, False),
        chat_of["c"]: (4, False, True),
        chat_of["d"]: (1, False, False),
    }
    assert [c["chat_id"] for c in body["chats"]] == [chat_of[x] for x in "adcb"]


async def test_mark_read_by_ids_then_the_whole_chat_sends_receipts_to_whatsapp(
    worker: Client,
) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    a1, a2 = phone_of(A1), phone_of(Slot.parse("A2"))
    ids = []
    for text in ("one", "two", "three"):
        sent = await worker.post("/api/accounts/A1/send", json={"to": a2, "text": text})
        ids.append((await sent.json())["message"]["waMessageId"])

    async def delivered() -> bool:
        found = await statuses(worker, "A1", a2)
        return found == dict.fromkeys(("one", "two", "three"), "delivered")

    await eventually_async(delivered, "all delivered to A2's device")
    chat = f"{a1}@s.whatsapp.net"
    marked = await worker.post(
        "/api/accounts/A2/markRead", json={"chat_id": a1, "message_ids": [ids[1]]}
    )
    body = await marked.json()
    assert (body["marked"], body["unread"], body["read_receipts"]) == (1, 2, "sent")

    async def second_read() -> bool:
        return await statuses(worker, "A1", a2) == {
            "one": "delivered",
            "two": "read",
            "three": "delivered",
        }

    await eventually_async(second_read, "only the second read")
    conversation = await (await worker.get(f"/api/accounts/A2/conversations/{chat}")).json()
    assert conversation["conversation"]["unread"] == 2
    whole = await (await worker.post("/api/accounts/A2/markRead", json={"chat_id": chat})).json()
    assert (whole["marked"], whole["unread"], whole["read_receipts"]) == (2, 0, "sent")

    async def all_read() -> bool:
        return await statuses(worker, "A1", a2) == dict.fromkeys(("one", "two", "three"), "read")

    await eventually_async(all_read, "all read")
    again = await (await worker.post("/api/accounts/A2/markRead", json={"chat_id": chat})).json()
    assert (again["marked"], again["read_receipts"]) == (0, "none")
    for bad in ({"chat_id": "x"}, {"chat_id": a1, "message_ids": []}, {"chat_id": a1, "extra": 1}):
        assert (await worker.post("/api/accounts/A2/markRead", json=bad)).status == 400


async def test_range_operations_merge_the_slots_in_one_keyed_order(worker: Client) -> None:
    history = worker.app[HISTORY]
    rng = random.Random(29)
    stored: list[dict[str, Any]] = []
    for n in range(150):
        slot = rng.choice(["A1", "A2", "A10", "A50"])
        chat = f"55119{rng.randrange(8):08d}@s.whatsapp.net"
        stamp = float(rng.randrange(1, 30))
        body = rng.choice(["alpha beta", "beta", "gamma alpha"])
        name = rng.choice(["Ana", "Bia", "ana", None])
        record = message(n, chat, stamp, body, slot=slot, push_name=name)
        assert await history.record(Slot.parse(slot), "in", record)
        stored.append(record)
    listed = await pages(worker, "/data/conversations", {"limit": "4"}, "after")
    # The oracle: each (slot, chat)'s latest message, latest first, then slot, then id (the
    # order the conversations were created), all descending.
    latest: dict[tuple[str, str], float] = {}
    created: dict[tuple[str, str], int] = {}
    for n, record in enumerate(stored):
        key = (record["slot"], record["chat_id"])
        latest[key] = max(latest.get(key, -1.0), record["timestamp"])
        created.setdefault(key, n)
    expected = sorted(latest, key=lambda k: (latest[k], k[0], created[k]), reverse=True)
    assert [(c["slot"], c["chat_id"]) for c in listed] == expected
    # The other orders, by the same oracle: unread (every message is inbound and unread),
    # then latest; the latest push name (nameless last), then slot and id ascending.
    unread: dict[tuple[str, str], int] = {}
    named: dict[tuple[str, str], tuple[float, int, str]] = {}
    for n, record in enumerate(stored):
        key = (record["slot"], record["chat_id"])
        unread[key] = unread.get(key, 0) + 1
        if record["push_name"] is not None:
            named[key] = max(
                named.get(key, (-1.0, -1, "")), (record["timestamp"], n, record["push_name"])
            )
    orders = {
        "unread": sorted(
            latest, key=lambda k: (unread[k], latest[k], k[0], created[k]), reverse=True
        ),
        "name": sorted(
            latest,
            key=lambda k: (k not in named, named[k][2] if k in named else "", k[0], created[k]),
        ),
    }
    for sort, wanted_order in orders.items():
        got = await pages(worker, "/data/conversations", {"limit": "3", "sort": sort}, "after")
        assert [(c["slot"], c["chat_id"]) for c in got] == wanted_order, sort
    # Clamped to a sub-range, and to the worker's own slots.
    some = await pages(
        worker, "/data/conversations", {"from": "A2", "to": "A10", "limit": "5"}, "after"
    )
    assert [(c["slot"], c["chat_id"]) for c in some] == [
        k for k in expected if k[0] in ("A2", "A10")
    ]
    beyond = await (
        await worker.get("/data/conversations", params={"from": "A40", "to": "A90"})
    ).json()
    assert {c["slot"] for c in beyond["items"]} == {"A50"}
    assert beyond["slots"] == ["A40", "A50"]
    elsewhere = await (await worker.get("/data/conversations", params={"from": "B1"})).json()
    assert (elsewhere["items"], elsewhere["slots"]) == ([], None)
    hits = await pages(worker, "/data/search", {"q": "alpha", "limit": "7"}, "after")
    # Search hits: newest first, in one shard the messages of a millisecond by arrival
    # whatever their slot.
    order = {r["wa_message_id"]: n for n, r in enumerate(stored)}
    wanted = sorted(
        (r for r in stored if "alpha" in r["body"]),
        key=lambda r: (r["timestamp"], order[r["wa_message_id"]]),
        reverse=True,
    )
    assert [h["wa_message_id"] for h in hits] == [r["wa_message_id"] for r in wanted]
    counts = await (await worker.get("/data/unread", params={"to": "A2"})).json()
    assert counts["total_messages"] == sum(1 for r in stored if r["slot"] in ("A1", "A2"))
    status = await (await worker.get("/data/status")).json()
    assert status["messages"] == 150
    assert status["conversations"] == len(latest)
    assert status["database_bytes"] > 0
    assert status["last_change_seq"] > 150


async def test_a_range_operation_reads_only_the_slots_that_have_data(tmp_path: Any) -> None:
    """A worker may serve a billion slots: a range reads those with conversations."""
    app = build_app(config(tmp_path, slot_to="A999999999"), EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app), headers=CREDENTIAL) as worker:
        history = worker.app[HISTORY]
        for n, slot in enumerate(["A7", "A123456789", "A999999999"]):
            chat = "5511900000001@s.whatsapp.net"
            assert await history.record(
                Slot.parse(slot), "in", message(n, chat, 10.0 + n, slot=slot)
            )
        for path in ("/data/conversations", "/data/unread", "/data/search?q=body"):
            answer = await asyncio.wait_for(worker.get(path), 5)
            assert answer.status == 200, path
        listed = await (await worker.get("/data/conversations", params={"to": "A200000000"})).json()
        assert [c["slot"] for c in listed["items"]] == ["A123456789", "A7"]


def _millisecond_then_arrival(stored: list[dict[str, Any]]) -> list[str]:
    """The documented search order, newest first: by whole millisecond, then (messages of
    one millisecond) the later stored first."""
    ranked = sorted(
        enumerate(stored), key=lambda p: (math.floor(p[1]["timestamp"] * 1000), p[0]), reverse=True
    )
    return [record["wa_message_id"] for _, record in ranked]


async def test_a_history_import_of_old_messages_after_new_ones_searches_in_time_order(
    worker: Client,
) -> None:
    history = worker.app[HISTORY]
    rng = random.Random(41)
    chats = [f"55119{i:08d}@s.whatsapp.net" for i in range(3)]
    stored: list[dict[str, Any]] = []
    for n in range(60):  # live first: the newest messages
        record = message(n, rng.choice(chats), 5_000.0 + rng.randrange(40) / 8, "needle live")
        assert await history.record(A1, "in", record)
        stored.append(record)
    # Then the phone's history, older (some in the same millisecond as each other, or as a
    # live message), imported in two batches after the live ones.
    stamps = [
        1.0,
        1.0004,
        2.5,
        4_000.0,
        5_000.0,
        5_000.0009,
        *(rng.uniform(1, 5_000) for _ in range(40)),
    ]
    older = [
        message(100 + n, rng.choice(chats), stamp, "needle old", read=True)
        for n, stamp in enumerate(stamps)
    ]
    for batch in (older[:20], older[20:]):
        assert await history.import_history(A1, batch, []) == len(batch)
        stored.extend(batch)
    expected = _millisecond_then_arrival(stored)
    for limit in ("1", "3", "50"):
        got = await pages(worker, f"{BASE}/search", {"q": "needle", "limit": limit}, "cursor")
        assert [h["wa_message_id"] for h in got] == expected, limit
    ranged = await pages(worker, "/data/search", {"q": "needle", "limit": "7"}, "after")
    assert [h["wa_message_id"] for h in ranged] == expected


async def test_ids_stay_unique_when_more_messages_share_a_millisecond_than_it_numbers(
    worker: Client,
) -> None:
    """A millisecond numbers 4096 messages; more spill into the next one's numbers, after
    any already there, ordered as if a millisecond later."""
    history = worker.app[HISTORY]
    chat = "5511900000001@s.whatsapp.net"
    next_ms = message(0, chat, 7.001, "crowd next")  # stored first: holds number 0 of 7001 ms
    assert await history.import_history(A1, [next_ms], []) == 1
    crowd = [message(1 + n, chat, 7.0, "crowd same") for n in range(4100)]
    assert await history.import_history(A1, crowd, []) == len(crowd)  # none lost
    got = await pages(worker, f"{BASE}/search", {"q": "crowd", "limit": "100"}, "cursor")
    ids = [h["id"] for h in got]
    assert len(set(ids)) == len(ids) == 4101
    names = [h["wa_message_id"] for h in got]
    # The four that spilled come newest, in the order stored, then the next millisecond's
    # own message, then the 4096 of the full millisecond.
    spilled = [m["wa_message_id"] for m in crowd[4096:]]
    assert names[:5] == [*spilled[::-1], next_ms["wa_message_id"]]
    assert names[5:] == [m["wa_message_id"] for m in crowd[:4096]][::-1]


def test_a_search_page_reads_a_page_of_the_index_not_every_match(tmp_path: Any) -> None:
    """Counted in SQLite VM steps: a page of 5 (first, and after a cursor) costs a small
    part of what reading every match costs, however many messages match."""
    path = tmp_path / "queue.sqlite3"
    ShardStore(path).close()
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        rng = random.Random(5)
        with transaction(db):
            for n in range(3000):
                chat = f"55119{n % 50:08d}@s.whatsapp.net"
                record = message(n, chat, rng.uniform(1, 1e6), f"common word {n}")
                assert history_rows.insert(db, A1, "in", record)
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        db.set_progress_handler(step, 100)
        every = db.execute(
            "SELECT count(m.body) FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "WHERE messages_fts MATCH 'common'"
        ).fetchone()
        assert every == (3000,)
        all_matches, steps = steps, 0
        first, cursor = message_pages.search(db, [A1], "common", SearchFilters(), None, 5)
        first_page, steps = steps, 0
        assert cursor is not None
        for _ in range(200):  # well into the matches
            _, cursor = message_pages.search(db, [A1], "common", SearchFilters(), cursor, 5)
            assert cursor is not None
        steps = 0
        later, _ = message_pages.search(db, [A1], "common", SearchFilters(), cursor, 5)
        later_page = steps
    assert len(first) == len(later) == 5
    assert first_page * 20 < all_matches, (first_page, all_matches)
    assert later_page * 20 < all_matches, (later_page, all_matches)
