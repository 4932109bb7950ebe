"""Reads across shards through a real master in front of three real simulator workers:
`GET /api/conversations`, `/api/search`, `/api/unread` and `/api/status`.

The oracle is built by the test: the conversations each slot's own listing gives
(straight from its worker, no master), filtered and sorted here by the documented
order, and the search hits from the messages the test sent. Paging goes through to
the end with the one cursor, every page size, and must equal the oracle exactly (no
repeat, no gap). Then the faults: a stopped (SIGSTOP) worker and a killed (SIGKILL)
one give `partial: true` with exactly their slots in `missing` and the rest right,
and the next page continues. The module's tests share one fleet, in file order; the
killing comes last."""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from wasp_worker.backends.simulator import phone_of

from tests.master.fleet import Fleet, Sent, log_in, running_fleet, send_all
from tests.support.worker import call_worker
from wasp.slots import Slot

ACTIVE = {"w1": ["A1", "A2", "A3"], "w2": ["A11", "A12"], "w3": ["A21", "A22"]}
SLOTS = [slot for slots in ACTIVE.values() for slot in slots]
WORDS = ("alpha", "bravo", "charlie", "delta", "echo")
SORTS = ("last", "unread", "name")
FILTERS: list[dict[str, Any]] = [
    {},
    {"unread": True},
    {"unread": False},
    {"pinned": True},
    {"archived": False},
    {"tag": "vip"},
    {"slots": "A2-A12"},
    {"slots": "A12"},
    {"slots": "A3-B9"},
    {"q": "a"},  # names (push names) are unset in the simulator: nothing has one
]


def jid(slot: str) -> str:
    return f"{phone_of(Slot.parse(slot))}@s.whatsapp.net"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("across")
    with running_fleet(root, SCATTER_TIMEOUT="1.5") as running:
        for slot in SLOTS:
            log_in(running, slot)
        # Every slot writes to some of the others, in several shards; bodies are words
        # the search oracle knows, plus a token unique to each message.
        plan = []
        for n in range(60):
            at = n % len(SLOTS)  # every ordered pair of slots, then some again
            sender = SLOTS[at]
            receiver = SLOTS[(at + 1 + (n // len(SLOTS)) % (len(SLOTS) - 1)) % len(SLOTS)]
            words = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(1 + n % 3))
            plan.append(Sent(sender, receiver, f"{words} token{n:03d}"))
        send_all(running, plan)
        # Some conversations read, pinned, archived or tagged: the filters have work.
        chats: dict[str, list[str]] = {}
        for c in every_conversation(running):
            chats.setdefault(c["slot"], []).append(c["chat_id"])
        for slot in ("A1", "A11", "A22"):
            code, _ = running.call(
                "POST", f"/api/accounts/{slot}/openChat", {"chat_id": chats[slot][0]}
            )
            assert code == 200
        for slot, patch in (
            ("A1", {"pinned": True, "tags": ["vip"]}),
            ("A12", {"pinned": True}),
            ("A21", {"archived": True, "tags": ["vip", "late"]}),
            ("A3", {"archived": True}),
        ):
            path = f"/api/accounts/{slot}/conversations/{chats[slot][-1]}"
            code, answer = running.call("PATCH", path, patch)
            assert code == 200, answer
        yield running


def every_conversation(fleet: Fleet) -> list[dict[str, Any]]:
    """Every conversation, from each slot's own listing on its worker (not the master)."""
    found = []
    for shard, slots in ACTIVE.items():
        for slot in slots:
            code, answer = call_worker(
                "GET", f"{fleet.urls[shard]}/api/accounts/{slot}/conversations?limit=500"
            )
            assert code == 200, answer
            assert answer["next_cursor"] is None
            found += [{**item, "slot": slot} for item in answer["items"]]
    return found


def in_slots(slot: str, text: str) -> bool:
    low, _, high = text.partition("-")
    a, b, s = Slot.parse(low), Slot.parse(high or low), Slot.parse(slot)
    return (a.prefix, a.number) <= (s.prefix, s.number) <= (b.prefix, b.number)


def expected(items: list[dict[str, Any]], sort: str, given: dict[str, Any]) -> list[Any]:
    """The oracle: the documented filters and order, written out here."""
    kept = []
    for c in items:
        if "unread" in given and (c["unread"] > 0) != given["unread"]:
            continue
        if "pinned" in given and c["pinned"] != given["pinned"]:
            continue
        if "archived" in given and c["archived"] != given["archived"]:
            continue
        if "tag" in given and given["tag"] not in c["tags"]:
            continue
        if "slots" in given and not in_slots(c["slot"], given["slots"]):
            continue
        if "q" in given and given["q"].lower() not in (c["name"] or "").lower():
            continue
        kept.append(c)
    last = {id(c): c["last_timestamp"] or 0.0 for c in kept}
    if sort == "last":
        kept.sort(key=lambda c: (last[id(c)], c["slot"], c["id"]), reverse=True)
    elif sort == "unread":
        kept.sort(key=lambda c: (c["unread"], last[id(c)], c["slot"], c["id"]), reverse=True)
    else:
        kept.sort(key=lambda c: (c["name"] is None, c["name"] or "", c["slot"], c["id"]))
    return [(c["slot"], c["chat_id"], c["unread"], c["pinned"], c["archived"]) for c in kept]


def page_through(
    fleet: Fleet, path: str, limit: int, key: str = "admin", **query: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page from the first to the one without `next_cursor`: (items, answers)."""
    items: list[dict[str, Any]] = []
    answers = []
    cursor = None
    for _ in range(500):
        given = {**query, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = fleet.get(path, key=key, **given)
        assert len(answer["items"]) <= limit
        answers.append(answer)
        items += answer["items"]
        cursor = answer["next_cursor"]
        if cursor is None:
            return items, answers
    raise AssertionError("no last page")


def shown(items: list[dict[str, Any]]) -> list[Any]:
    return [(c["slot"], c["chat_id"], c["unread"], c["pinned"], c["archived"]) for c in items]


def test_conversations_across_shards_equal_the_oracle_in_every_order_filter_and_page_size(
    fleet: Fleet,
) -> None:
    everything = every_conversation(fleet)
    assert {c["slot"] for c in everything} == set(SLOTS)
    assert len(everything) >= 20
    for sort in SORTS:
        for given in FILTERS:
            wanted = expected(everything, sort, given)
            for limit in (1, 4, 500):
                items, answers = page_through(
                    fleet, "/api/conversations", limit, sort=sort, **given
                )
                assert shown(items) == wanted, (sort, given, limit)
                assert not any(a["partial"] or a["missing"] for a in answers)
    # The filters selected something and left something out.
    assert 0 < len(expected(everything, "last", {"unread": True})) < len(everything)
    assert expected(everything, "last", {"tag": "vip"})


def hits_expected(fleet: Fleet, word: str) -> Counter[tuple[str, str, str]]:
    """Each sent message holding the word is a hit twice: out on the sender (in the
    chat with the receiver), in on the receiver (in the chat with the sender)."""
    found: Counter[tuple[str, str, str]] = Counter()
    for sent in fleet.sent:
        if word in sent.body.split():
            found[(sent.sender, jid(sent.receiver), sent.body)] += 1
            found[(sent.receiver, jid(sent.sender), sent.body)] += 1
    return found


def test_search_across_shards_finds_every_hit_once_newest_first(fleet: Fleet) -> None:
    for word in ("alpha", "delta", "token007", "nothinglikeit"):
        wanted = hits_expected(fleet, word)
        for limit in (1, 7, 100):
            items, answers = page_through(fleet, "/api/search", limit, q=word)
            got = Counter((h["slot"], h["chat_id"], h["body"]) for h in items)
            assert got == wanted, (word, limit)
            # The search key: (id, slot), ids time-ordered to the millisecond.
            places = [(h["id"], h["slot"]) for h in items]
            assert places == sorted(places, reverse=True), "newest first"
            assert len(set(places)) == len(places)
            stamps = [math.floor(h["timestamp"] * 1000) for h in items]
            assert stamps == sorted(stamps, reverse=True)
            assert not any(a["partial"] for a in answers)
    # Filters pass through to every shard: one slot's range, one chat.
    items, _ = page_through(fleet, "/api/search", 100, q="alpha", slots="A11-A30")
    wanted = Counter(
        {k: v for k, v in hits_expected(fleet, "alpha").items() if in_slots(k[0], "A11-A30")}
    )
    assert Counter((h["slot"], h["chat_id"], h["body"]) for h in items) == wanted
    items, _ = page_through(fleet, "/api/search", 100, q="alpha", chat_id=jid("A1"))
    assert items
    assert all(h["chat_id"] == jid("A1") for h in items)


def test_unread_across_shards_sums_each_slots_own_counts(fleet: Fleet) -> None:
    everything = every_conversation(fleet)
    answer = fleet.get("/api/unread")
    assert not answer["partial"]
    per_slot = {entry["slot"]: entry for entry in answer["slots"]}
    counted = [c for c in everything if c["unread"] and not c["archived"]]
    apart = [c for c in everything if c["unread"] and c["archived"]]
    assert apart, "an archived conversation with unread messages, counted apart"
    for slot in SLOTS:
        mine = [c for c in counted if c["slot"] == slot]
        entry = per_slot.get(
            slot, {"messages": 0, "conversations": 0, "muted_or_archived_messages": 0}
        )
        assert entry["messages"] == sum(c["unread"] for c in mine), slot
        assert entry["conversations"] == len(mine), slot
        assert entry["muted_or_archived_messages"] == sum(
            c["unread"] for c in apart if c["slot"] == slot
        ), slot
    assert answer["totals"] == {
        "messages": sum(c["unread"] for c in counted),
        "conversations": len(counted),
        "muted_or_archived_messages": sum(c["unread"] for c in apart),
        "muted_or_archived_conversations": len(apart),
    }
    ranged = fleet.get("/api/unread", slots="A11-A20")
    assert {entry["slot"] for entry in ranged["slots"]} == {
        c["slot"] for c in counted + apart if c["slot"] in ACTIVE["w2"]
    }
    # The unread chats, a page at a time across the shards: each once, latest first (the
    # listing's `last` order), whatever the page size; the totals on every page.
    for given in ({}, {"slots": "A2-A12"}, {"slots": "A1-A3"}):  # one shard: its own more
        wanted = expected(everything, "last", {"unread": True, **given})
        for limit in (1, 3, 500):
            chats, cursor, pages = [], None, 0
            while pages < 500:  # a cursor that does not move on fails, not hangs
                page = fleet.get(
                    "/api/unread", limit=limit, **given, **({"cursor": cursor} if cursor else {})
                )
                assert len(page["chats"]) <= limit
                assert page["totals"] == fleet.get("/api/unread", **given)["totals"]
                chats += page["chats"]
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert shown(chats) == wanted, (given, limit)
            assert pages >= math.ceil(len(wanted) / limit)
    for bad in ({"cursor": "nope"}, {"limit": 0}, {"limit": 501}):
        code, _ = fleet.call("GET", "/api/unread", **bad)
        assert code == 400, bad


def test_status_reads_every_shards_store(fleet: Fleet) -> None:
    answer = fleet.get("/api/status")
    assert [s["id"] for s in answer["shards"]] == ["w1", "w2", "w3"]
    assert answer["unreachable"] == []
    for shard in answer["shards"]:
        assert shard["reachable"] is True
        stored = sum(
            (fleet.shard_of(s.sender) == shard["id"]) + (fleet.shard_of(s.receiver) == shard["id"])
            for s in fleet.sent
        )
        assert shard["store"]["messages"] == stored, shard


def test_a_slot_scoped_key_reads_only_its_ranges(fleet: Fleet) -> None:
    everything = every_conversation(fleet)
    items, _answers = page_through(fleet, "/api/conversations", 3, key="range")
    assert shown(items) == expected(everything, "last", {"slots": "A1-A15"})
    assert {c["slot"] for c in items} == {"A1", "A2", "A3", "A11", "A12"}
    assert fleet.get("/api/conversations", key="range", slots="A12")["items"]
    for path, query in (
        ("/api/conversations", {"slots": "A1-A30"}),
        ("/api/conversations", {"slots": "A16"}),
        ("/api/search", {"q": "alpha", "slots": "A10-A20"}),
        ("/api/unread", {"slots": "A21"}),
    ):
        code, answer = fleet.call("GET", path, key="range", **query)
        assert code == 403, (path, query, answer)
        assert "outside key 'range'" in answer["error"]
    for path in ("/api/conversations", "/api/search?q=alpha", "/api/unread"):
        code, answer = fleet.call("GET", path, key="sales")
        assert (code, "workspaces sales" in answer["error"]) == (403, True), answer
    assert fleet.call("GET", "/api/status", key="range")[0] == 403
    assert fleet.call("GET", "/api/conversations", key=None)[0] == 401


def test_bad_queries_are_refused_with_the_reason(fleet: Fleet) -> None:
    for query, status, says in (
        ({"cursor": "nope"}, 400, "cursor"),
        ({"slots": "A0"}, 400, "slots"),
        ({"slots": "a1-a5"}, 400, "slots"),
        ({"slots": "A1-A5-A7"}, 400, "slots"),
        ({"limit": "0"}, 400, "limit"),
        ({"limit": "501"}, 400, "limit"),
        ({"sort": "oldest"}, 400, "sort"),
        ({"unread": "maybe"}, 400, "unread"),
        ({"slots": "A9-A3"}, 404, "no shard"),
        ({"slots": "B1-B50"}, 404, "no shard"),
    ):
        code, answer = fleet.call("GET", "/api/conversations", **query)
        assert (code, answer["ok"]) == (status, False), (query, answer)
        assert says in answer["error"], (query, answer)
    for query in (
        {},
        {"q": ""},
        {"q": "x" * 101},
        {"q": "a", "since": "-1"},
        {"q": "a", "limit": "101"},
    ):
        code, answer = fleet.call("GET", "/api/search", **query)
        assert code == 400, (query, answer)


def test_search_across_three_shards_is_quick(fleet: Fleet) -> None:
    """200 searches through the master, one after another (figures printed; the bound is
    loose: the machine is shared)."""
    took = []
    for n in range(200):
        started = time.perf_counter()
        answer = fleet.get("/api/search", q=WORDS[n % len(WORDS)], limit=20)
        took.append((time.perf_counter() - started) * 1000)
        assert answer["items"]
        assert not answer["partial"]
    took.sort()
    p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99) - 1]
    print(f"\nsearch across 3 shards, 200 calls: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert p99 < 1000


def test_a_stopped_shard_is_missing_after_the_timeout_and_the_rest_is_right(
    fleet: Fleet,
) -> None:
    everything = every_conversation(fleet)
    w3 = fleet.workers["w3"]
    os.killpg(w3.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = fleet.get("/api/conversations", limit=500)
        took = time.monotonic() - started
    finally:
        os.killpg(w3.pid, signal.SIGCONT)
    assert 1.4 < took < 5, took
    assert answer["partial"] is True
    [gone] = answer["missing"]
    assert (gone["shard"], gone["from"], gone["to"]) == ("w3", "A21", "A30")
    assert "1.5 s" in gone["reason"]
    assert fleet.metric("wasp_master_scatter_missing_total", shard="w3", why="timeout") == 1
    alive = [c for c in everything if c["slot"] not in ACTIVE["w3"]]
    assert shown(answer["items"]) == expected(alive, "last", {})


def test_a_killed_shard_is_missing_and_the_next_page_continues(fleet: Fleet) -> None:
    everything = every_conversation(fleet)
    wanted = expected(everything, "last", {})
    first = fleet.get("/api/conversations", limit=5)
    assert shown(first["items"]) == wanted[:5]
    assert not first["partial"]
    fleet.workers["w2"].kill()
    rest, answers = [], []
    cursor = first["next_cursor"]
    while cursor:
        answer = fleet.get("/api/conversations", limit=5, cursor=cursor)
        answers.append(answer)
        rest += answer["items"]
        cursor = answer["next_cursor"]
    for answer in answers:
        assert answer["partial"] is True
        assert [(m["shard"], m["from"], m["to"]) for m in answer["missing"]] == [
            ("w2", "A11", "A20")
        ]
        assert "cannot reach" in answer["missing"][0]["reason"]
    missed = fleet.metric("wasp_master_scatter_missing_total", shard="w2", why="unreachable")
    assert missed == len(answers)
    alive_after = [c for c in wanted[5:] if c[0] not in ACTIVE["w2"]]
    assert shown(rest) == alive_after
    # Search and unread say the same; status names w2 unreachable.
    search = fleet.get("/api/search", q="alpha", limit=100)
    assert search["partial"]
    assert search["missing"][0]["shard"] == "w2"
    wanted_hits = Counter(
        {k: v for k, v in hits_expected(fleet, "alpha").items() if k[0] not in ACTIVE["w2"]}
    )
    assert Counter((h["slot"], h["chat_id"], h["body"]) for h in search["items"]) == wanted_hits
    unread = fleet.get("/api/unread")
    assert unread["partial"]
    assert not {e["slot"] for e in unread["slots"]} & set(ACTIVE["w2"])
    status = fleet.get("/api/status")
    assert status["unreachable"] == ["w2"]
    w2 = next(s for s in status["shards"] if s["id"] == "w2")
    assert w2["reachable"] is False
    assert "cannot reach" in w2["reason"]
    # A slot of the dead shard alone: partial, nothing else, still 200.
    only = fleet.get("/api/conversations", slots="A11-A20")
    assert only["partial"]
    assert only["items"] == []
