"""The unread summary against an oracle the test counts from the rows it stored: per-slot
totals (muted and archived chats apart) and the unread chats a page at a time, latest
first, each seen once, for one slot and for a range of slots."""

from __future__ import annotations

import random
from typing import Any

from wasp_worker.state import HISTORY

from tests.worker.test_data_reads import Client, message
from wasp.slots import Slot

SLOTS = ["A1", "A2", "A10", "A50"]
FUTURE = 9e10  # muted until then: muted now


async def _store(worker: Client, seed: int) -> tuple[dict[tuple[str, str], int], set[Any]]:
    """Random inbound and outbound messages over a few slots and chats, some chats read,
    muted (now or in the past) or archived. The oracle: each chat's unread inbound
    messages, counted here from what was stored, and the chats muted now or archived."""
    history = worker.app[HISTORY]
    rng = random.Random(seed)
    unread: dict[tuple[str, str], int] = {}
    for n in range(240):
        slot = rng.choice(SLOTS)
        chat = f"55119{rng.randrange(12):08d}@s.whatsapp.net"
        direction = rng.choice(["in", "in", "out"])
        stamp = float(rng.randrange(1, 40))  # ties: the slot, then the id, break them
        assert await history.record(Slot.parse(slot), direction, message(n, chat, stamp, slot=slot))
        unread.setdefault((slot, chat), 0)
        if direction == "in":
            unread[slot, chat] += 1
    apart: set[tuple[str, str]] = set()
    for slot, chat in sorted(unread):
        roll = rng.random()
        base = f"/api/accounts/{slot}"
        if roll < 0.2:
            read = await worker.post(f"{base}/markRead", json={"chat_id": chat})
            assert read.status == 200
            unread[slot, chat] = 0
        elif roll < 0.35:
            await worker.patch(f"{base}/conversations/{chat}", json={"muted_until": FUTURE})
            apart.add((slot, chat))
        elif roll < 0.45:
            await worker.patch(f"{base}/conversations/{chat}", json={"archived": True})
            apart.add((slot, chat))
        elif roll < 0.55:  # muted until a time past: counted
            await worker.patch(f"{base}/conversations/{chat}", json={"muted_until": 1.0})
    return {k: v for k, v in unread.items() if v}, apart


def _totals(unread: dict[tuple[str, str], int], apart: set[Any], slots: list[str]) -> Any:
    mine = {k: v for k, v in unread.items() if k[0] in slots}
    counted = {k: v for k, v in mine.items() if k not in apart}
    away = {k: v for k, v in mine.items() if k in apart}
    return (
        sum(counted.values()),
        len(counted),
        {"messages": sum(away.values()), "conversations": len(away)},
    )


async def _chats(worker: Client, path: str, name: str, limit: int, **params: str) -> list[Any]:
    """Every unread chat of the summary, page by page (cursor in parameter `name`)."""
    chats: list[Any] = []
    cursor = None
    for _ in range(1000):  # a cursor that does not move on fails here, not by hanging
        query = {"limit": str(limit), **params, **({name: cursor} if cursor else {})}
        answer = await worker.get(path, params=query)
        assert answer.status == 200, await answer.text()
        page = await answer.json()
        assert len(page["chats"]) <= limit
        chats += page["chats"]
        cursor = page["next_cursor"]
        if cursor is None:
            return chats
    raise AssertionError("no last page")


async def test_unread_totals_and_pages_match_the_stored_rows(worker: Client) -> None:
    unread, apart = await _store(worker, seed=5)
    assert apart & set(unread), "a muted or archived chat with unread messages"
    # Ranges: the worker's own, and a sub-range.
    for params, slots in (({}, SLOTS), ({"from": "A2", "to": "A10"}, ["A2", "A10"])):
        body = await (await worker.get("/data/unread", params={"limit": "1", **params})).json()
        got = (body["total_messages"], body["total_conversations"], body["muted_or_archived"])
        assert got == _totals(unread, apart, slots), params
        assert body["by_slot"] == [
            {
                "slot": slot,
                "messages": _totals(unread, apart, [slot])[0],
                "conversations": _totals(unread, apart, [slot])[1],
                "muted_or_archived": _totals(unread, apart, [slot])[2],
            }
            for slot in slots
            if any(k[0] == slot for k in unread)
        ]
        for limit in (1, 3, 50, 500):
            chats = await _chats(worker, "/data/unread", "after", limit, **params)
            keys = [(c["slot"], c["chat_id"]) for c in chats]
            assert len(keys) == len(set(keys)), "no chat twice"
            assert set(keys) == {k for k in unread if k[0] in slots}, "none skipped"
            assert {k: c["unread"] for k, c in zip(keys, chats, strict=True)} == {
                k: v for k, v in unread.items() if k[0] in slots
            }
            order = [(c["last_timestamp"], c["slot"], c["id"]) for c in chats]
            assert order == sorted(order, reverse=True), "latest first, then slot, then id"
            for c in chats:
                assert c["muted"] == (c["muted_until"] is not None and c["muted_until"] > 1e10)
                assert (c["muted"] or c["archived"]) == ((c["slot"], c["chat_id"]) in apart)
    # One slot: its own totals, its chats paged the same way.
    for slot in SLOTS:
        base = f"/api/accounts/{slot}/unread"
        body = await (await worker.get(base)).json()
        got = (body["total_messages"], body["total_conversations"], body["muted_or_archived"])
        assert got == _totals(unread, apart, [slot]), slot
        for limit in (1, 2, 500):
            chats = await _chats(worker, base, "cursor", limit)
            keys = [(c["slot"], c["chat_id"]) for c in chats]
            assert len(keys) == len(set(keys))
            assert set(keys) == {k for k in unread if k[0] == slot}
            in_time = [(c["last_timestamp"], c["id"]) for c in chats]
            assert in_time == sorted(in_time, reverse=True)


async def test_unread_refuses_a_bad_page_and_reads_any_valid_cursor(worker: Client) -> None:
    await _store(worker, seed=7)
    for path, name in (("/api/accounts/A1/unread", "cursor"), ("/data/unread", "after")):
        for bad in ({"limit": "0"}, {"limit": "501"}, {name: "nope"}, {name: "1_2_3"}):
            answer = await worker.get(path, params=bad)
            assert answer.status == 400, (path, bad)
            assert "invalid query" in (await answer.json())["error"]
        # A cursor no chat has is a position: the chats after it.
        later = await worker.get(path, params={name: "20.5_0_z_A2_0"})
        assert later.status == 200
        assert all(c["last_timestamp"] <= 20.5 for c in (await later.json())["chats"])
