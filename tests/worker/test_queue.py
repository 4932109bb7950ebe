"""The durable queue: group commit of concurrent enqueues, and migration of old volumes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from wasp_worker.queue import SCHEMA, OutboundQueue, message_id
from wasp_worker.store import ShardStore, migrations

from wasp.messages import TextMessage
from wasp.slots import Slot

A1 = Slot.parse("A1")


def committed(path: Path, row: int) -> bool:
    """Whether another connection sees the row: only committed rows are visible there."""
    with sqlite3.connect(path) as other:
        return other.execute("SELECT 1 FROM outbound WHERE id=?", (row,)).fetchone() is not None


async def test_concurrent_enqueues_share_transactions_and_are_answered_after_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "queue.sqlite3"
    store = ShardStore(path)
    queue = store.queue
    slow_commit = OutboundQueue._commit

    def commit_later(db: sqlite3.Connection) -> None:
        time.sleep(0.02)  # an answer given before the commit would see no row elsewhere
        slow_commit(db)

    monkeypatch.setattr(OutboundQueue, "_commit", staticmethod(commit_later))
    seen_at_answer: list[bool] = []

    async def client(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 7))
        row, created = await queue.enqueue(A1, TextMessage(to="5511999999999", text=f"m{i}"))
        assert created
        seen_at_answer.append(committed(path, row.id))
        return row.id

    try:
        rows = await asyncio.gather(*(client(i) for i in range(200)))
    finally:
        store.close()
    assert all(seen_at_answer)
    assert len(set(rows)) == 200
    assert queue.stats.requests == 200
    assert queue.stats.commits < 200 / 4
    assert queue.stats.largest > 10
    with sqlite3.connect(path) as db:
        stored = db.execute("SELECT body, wa_message_id, id FROM outbound").fetchall()
    assert sorted(body for body, _, _ in stored) == sorted(f"m{i}" for i in range(200))
    assert all(wa_id == message_id(A1, row) for _, wa_id, row in stored)


async def test_one_idempotency_key_twice_in_a_batch_is_one_row(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "queue.sqlite3")
    queue = store.queue
    try:
        answers = await asyncio.gather(
            *(
                queue.enqueue(A1, TextMessage(to="5511999999999", text="x", idempotency_key="k"))
                for _ in range(10)
            )
        )
    finally:
        store.close()
    assert queue.stats.commits == 1  # they did share one transaction
    assert len({row.id for row, _ in answers}) == 1
    assert [created for _, created in answers].count(True) == 1


async def test_one_bad_request_does_not_fail_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "queue.sqlite3"
    store = ShardStore(path)
    queue = store.queue
    insert = OutboundQueue._insert

    def refuse_one(
        self: OutboundQueue, slot: Slot, request: TextMessage, upload: object = None
    ) -> object:
        result = insert(self, slot, request)  # its row is written, then it fails
        if request.text == "bad":
            raise ValueError("refused")
        return result

    monkeypatch.setattr(OutboundQueue, "_insert", refuse_one)
    texts = ["a", "b", "bad", "c", "d"]
    try:
        answers = await asyncio.gather(
            *(queue.enqueue(A1, TextMessage(to="5511999999999", text=t)) for t in texts),
            return_exceptions=True,
        )
    finally:
        store.close()
    assert queue.stats.commits == 1
    assert isinstance(answers[2], ValueError)
    assert all(not isinstance(a, BaseException) for i, a in enumerate(answers) if i != 2)
    with sqlite3.connect(path) as db:
        bodies = [r[0] for r in db.execute("SELECT body FROM outbound ORDER BY id")]
    assert bodies == ["a", "b", "c", "d"]  # the bad one's row was rolled back, alone


def old_volume(path: Path) -> None:
    """A queue file as the first worker version wrote it, with rows in every state."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(SCHEMA)
    rows = [
        ("A1", "k1", "sent", None),
        ("A1", None, "failed", "not_a_simulated_account"),
        ("A2", "k2", "queued", None),
        ("A1", None, "queued", None),
    ]
    for slot, key, state, reason in rows:
        cursor = db.execute(
            "INSERT INTO outbound (slot, idempotency_key, wa_message_id, destination, kind, "
            "body, state, reason, not_before, created) VALUES (?, ?, '', ?, 'text', 'hi', ?, "
            "?, 1.0, 1.0)",
            (slot, key, "5511999999999@s.whatsapp.net", state, reason),
        )
        row = int(cursor.lastrowid or 0)
        db.execute(
            "UPDATE outbound SET wa_message_id=? WHERE id=?",
            (message_id(Slot.parse(slot), row), row),
        )
    db.execute("DELETE FROM outbound WHERE id=4")  # its id must never come back
    db.execute("INSERT INTO lid_map VALUES ('A1', '1@lid', '55@s.whatsapp.net')")
    db.close()


async def test_an_old_queue_file_is_migrated_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    old_volume(path)
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT * FROM outbound ORDER BY id").fetchall()
    store = ShardStore(path)
    queue = store.queue
    try:
        again, created = await queue.enqueue(
            Slot.parse("A2"), TextMessage(to="5511999999999", text="x", idempotency_key="k2")
        )
        assert (again.id, created) == (3, False)  # the old row answers its key
        fresh, created = await queue.enqueue(A1, TextMessage(to="1@lid", text="y"))
        assert (fresh.id, created) == (5, True)  # after the deleted 4, never it
        assert fresh.destination == "55@s.whatsapp.net"  # the LID map came along
        await queue.retry(3, 1, 2.0, "ConnectionError", 1.5)
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(migrations(tmp_path))
        columns = [c[1] for c in db.execute("PRAGMA table_info(outbound)")]
        after = db.execute(
            f"SELECT {', '.join(columns[:14])} FROM outbound WHERE id < 5 ORDER BY id"
        ).fetchall()
        retried = db.execute("SELECT attempts, reason FROM outbound WHERE id=3").fetchone()
        for state in ("delivered", "read", "played"):  # receipts' states are allowed now
            db.execute("UPDATE outbound SET state=? WHERE id=1", (state,))
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE outbound SET state='lost' WHERE id=1")
    assert [r[:11] for r in after] == [
        r[:11] if r[0] != 3 else (*r[:10], "ConnectionError") for r in before
    ]
    assert retried == (1, "ConnectionError")
    ShardStore(path).close()  # opening it again changes nothing
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM outbound").fetchone()[0] == 4
