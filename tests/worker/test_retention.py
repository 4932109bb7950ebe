"""Retention on a real shard database: what survives against an independent oracle, the
media files of deleted messages gone, every deletion in the sync sequence, batches bounded."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wasp_worker import history, media, retention
from wasp_worker.app import build_app
from wasp_worker.backends.simulator import jid_of, phone_of
from wasp_worker.db import transaction
from wasp_worker.events import EventLog
from wasp_worker.retention import DAY_S, Pruner
from wasp_worker.store import ShardStore

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_outbound import login
from tests.worker.test_worker_http import config
from wasp.retention import Retention
from wasp.slots import Slot

NOW = 1_800_000_000.0
CHATS = [
    ("A1", "5511000000001@s.whatsapp.net"),
    ("A1", "5511000000002@s.whatsapp.net"),
    ("A1", "120363000000000001@g.us"),
    ("A2", "5511000000001@s.whatsapp.net"),
]

Row = tuple[str, str, str, float]  # slot, chat, message id, timestamp


def fields(
    chat_id: str, message_id: str, timestamp: float, media_url: str | None = None
) -> dict[str, Any]:
    return {
        "from": chat_id.partition("@")[0],
        "chat_id": chat_id,
        "wa_message_id": message_id,
        "body": f"body of {message_id}",
        "timestamp": timestamp,
        "media_type": "image" if media_url else None,
        "media_url": media_url,
        "mime_type": "image/jpeg" if media_url else None,
    }


def store_messages(
    store: ShardStore, rows: list[Row], media_of: dict[str, str] | None = None
) -> None:
    def write(db: sqlite3.Connection) -> None:
        with transaction(db):
            for slot, chat, message_id, timestamp in rows:
                url = (media_of or {}).get(message_id)
                history.insert(db, Slot.parse(slot), "in", fields(chat, message_id, timestamp, url))

    store.db.call_blocking(write)


def oracle(rows: list[Row], limits: Retention, now: float) -> set[str]:
    """The ids that survive, computed from the rows alone: per chat, drop messages older
    than the cutoff, and keep only the newest `maxMessagesPerChat` (ties by insertion)."""
    kept: set[str] = set()
    for slot, chat in {(r[0], r[1]) for r in rows}:
        mine = [(r[3], order, r[2]) for order, r in enumerate(rows) if (r[0], r[1]) == (slot, chat)]
        newest_first = sorted(mine, reverse=True)
        if limits.maxMessagesPerChat is not None:
            newest_first = newest_first[: limits.maxMessagesPerChat]
        for timestamp, _, message_id in newest_first:
            if limits.maxAgeDays is None or timestamp >= now - limits.maxAgeDays * DAY_S:
                kept.add(message_id)
    return kept


def surviving(store: ShardStore) -> set[str]:
    return {
        row[0]
        for row in store.db.call_blocking(
            lambda db: db.execute("SELECT wa_message_id FROM messages").fetchall()
        )
    }


def changes_after(store: ShardStore, seq: int) -> list[tuple[str, str, str]]:
    return store.db.call_blocking(
        lambda db: db.execute(
            "SELECT slot, kind, key FROM changes WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
    )


def last_seq(store: ShardStore) -> int:
    return int(
        store.db.call_blocking(
            lambda db: db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
        )
    )


def conversation_rows(store: ShardStore) -> dict[tuple[str, str], tuple[Any, ...]]:
    found = store.db.call_blocking(
        lambda db: db.execute(
            "SELECT slot, chat_id, last_message_id, last_timestamp, unread FROM conversations"
        ).fetchall()
    )
    return {(row[0], row[1]): tuple(row[2:]) for row in found}


def pruner(store: ShardStore, work_dir: Path, limits: Retention, **options: Any) -> Pruner:
    return Pruner(
        store.db, work_dir, limits, EventLog(stream=io.StringIO()), now=lambda: NOW, **options
    )


_rows = st.lists(
    st.tuples(
        st.sampled_from(range(len(CHATS))),
        st.floats(NOW - 40 * DAY_S, NOW, allow_nan=False).map(lambda t: float(round(t))),
    ),
    max_size=60,
)
_limits = st.builds(
    Retention,
    maxAgeDays=st.none() | st.integers(1, 45),
    maxMessagesPerChat=st.none() | st.integers(1, 12),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=_rows, limits=_limits, batch=st.integers(1, 7), chats_per_call=st.integers(1, 3))
def test_what_survives_is_what_the_oracle_keeps_and_each_deletion_is_a_change(
    tmp_path_factory: pytest.TempPathFactory,
    drawn: list[tuple[int, float]],
    limits: Retention,
    batch: int,
    chats_per_call: int,
) -> None:
    work_dir = tmp_path_factory.mktemp("shard")
    store = ShardStore.in_folder(work_dir)
    try:
        rows = [(*CHATS[chat], f"M{i}", ts) for i, (chat, ts) in enumerate(drawn)]
        store_messages(store, rows)
        before = last_seq(store)
        summaries = conversation_rows(store)
        sizes: list[int] = []
        real_delete = retention.delete

        def counting(db: sqlite3.Connection, doomed: list[retention.Doomed]) -> int:
            sizes.append(len(doomed))
            return real_delete(db, doomed)

        retention.delete = counting  # a spy on the real thing
        try:
            prune = pruner(store, work_dir, limits, batch=batch, chats_per_call=chats_per_call)
            deleted = asyncio.run(prune.prune())
        finally:
            retention.delete = real_delete
        kept = oracle(rows, limits, NOW)
        assert surviving(store) == kept
        gone = {row[2] for row in rows} - kept
        assert deleted == len(gone)
        assert all(size <= batch for size in sizes)  # no database call holds more
        logged = changes_after(store, before)
        assert {key for _, kind, key in logged if kind == "message"} == gone
        # Every conversation whose summary changed is in the sequence too.
        after = conversation_rows(store)
        changed = {chat for chat, row in after.items() if summaries.get(chat) != row}
        assert changed <= {(slot, key) for slot, kind, key in logged if kind == "conversation"}
        # Each conversation names its newest surviving message, or none when emptied.
        for slot, chat in CHATS:
            mine = [r for r in rows if (r[0], r[1]) == (slot, chat) and r[2] in kept]
            found = conversation_rows(store).get((slot, chat))
            found = (found[0], found[2]) if found is not None else None
            if not [r for r in rows if (r[0], r[1]) == (slot, chat)]:
                assert found is None
                continue
            newest = max(mine, key=lambda r: (r[3], rows.index(r)))[2] if mine else None
            assert found == (newest, len(mine))
        # A second pass finds nothing more.
        again = asyncio.run(pruner(store, work_dir, limits).prune())
        assert again == 0
    finally:
        store.close()


async def test_the_media_of_deleted_messages_leave_the_volume(tmp_path: Path) -> None:
    store = ShardStore.in_folder(tmp_path)
    slot = Slot.parse("A1")
    chat = CHATS[0][1]
    names = {}
    for message_id in ("OLD1", "OLD2", "NEW1"):
        names[message_id] = media.save(tmp_path, slot, message_id, "image/jpeg", b"\xff\xd8jpeg")
    urls = {m: f"/api/accounts/A1/media/{n}" for m, n in names.items()}
    stranger = media.media_dir(tmp_path, slot) / "UNRELATED.jpg"
    stranger.write_bytes(b"x")
    rows: list[Row] = [
        ("A1", chat, "OLD1", NOW - 10 * DAY_S),
        ("A1", chat, "OLD2", NOW - 9 * DAY_S),
        ("A1", chat, "NEW1", NOW - 1),
        ("A1", chat, "TEXT", NOW - 20 * DAY_S),
    ]
    store_messages(store, rows, urls)
    try:
        deleted = await pruner(store, tmp_path, Retention(maxAgeDays=7)).prune()
        assert deleted == 3
        folder = media.media_dir(tmp_path, slot)
        assert sorted(p.name for p in folder.iterdir()) == sorted([names["NEW1"], "UNRELATED.jpg"])
    finally:
        store.close()


async def test_no_limits_prune_nothing_and_run_waits_for_the_lease(tmp_path: Path) -> None:
    store = ShardStore.in_folder(tmp_path)
    try:
        store_messages(store, [("A1", CHATS[0][1], "ANCIENT", 1.0)])
        assert await pruner(store, tmp_path, Retention()).prune() == 0
        limited = pruner(store, tmp_path, Retention(maxAgeDays=1))
        held = False
        task = asyncio.create_task(limited.run(0.01, lambda: held))
        await asyncio.sleep(0.1)
        assert surviving(store) == {"ANCIENT"}  # a standby leaves the database alone
        held = True
        for _ in range(100):
            if not surviving(store):
                break
            await asyncio.sleep(0.02)
        assert surviving(store) == set()
        task.cancel()
    finally:
        store.close()


async def test_a_worker_prunes_by_its_environment_and_sync_reports_the_deletions(
    tmp_path: Path,
) -> None:
    settings = config(
        tmp_path,
        retention_max_messages_per_chat=2,
        retention_interval_s=0.1,
        retention_batch=1,
        pacing_recipient_burst=10,  # the four messages leave at once
    )
    app = build_app(settings, EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app), headers=CREDENTIAL) as worker:
        await login(worker, "A1")
        await login(worker, "A2")
        sent = []
        for text in ("one", "two", "three", "four"):
            answer = await worker.post(
                "/api/accounts/A1/send", json={"to": phone_of(Slot.parse("A2")), "text": text}
            )
            sent.append((await answer.json())["message"]["waMessageId"])
            await asyncio.sleep(0.05)  # arrival in sending order
        chat = jid_of(Slot.parse("A1"))

        async def pruned() -> dict[str, Any] | None:
            got = await worker.get("/api/accounts/A2/sync")
            page = await got.json()
            kept = [m["wa_message_id"] for m in page["messages"] if m["chat_id"] == chat]
            return page if kept == sent[2:] and len(page["deleted"]["messages"]) == 2 else None

        page = await eventually_async(pruned, "A2's chat pruned to its newest two")
        assert page["deleted"]["messages"] == sent[:2]
