"""The shard's one database: volumes of every earlier version are brought up to date,
the old history and outbox files copied in once; a change and its webhook events
commit together or not at all."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from wasp_worker.db import migrate
from wasp_worker.queue import MIGRATIONS as QUEUE_MIGRATIONS
from wasp_worker.queue import SCHEMA as QUEUE_V0
from wasp_worker.queue import OutboundQueue
from wasp_worker.store import ShardStore, migrations

from wasp.messages import TextMessage
from wasp.slots import Slot
from wasp.webhooks import Event

A1 = Slot.parse("A1")
CHAT = "5511999999999@s.whatsapp.net"

# The history's own file as workers before the one database wrote it: version 0, and
# version 1 (receipt status, sender JID). Kept here verbatim: the code has moved on.
HISTORY_V0 = """
CREATE TABLE messages (
  slot TEXT NOT NULL, wa_message_id TEXT NOT NULL, chat_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('in', 'out')), sender TEXT NOT NULL,
  push_name TEXT, body TEXT NOT NULL DEFAULT '', media_type TEXT, media_url TEXT,
  timestamp REAL NOT NULL, read INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (slot, wa_message_id)
);
CREATE INDEX messages_chat ON messages (slot, chat_id, timestamp);
"""
HISTORY_V1 = (
    "ALTER TABLE messages ADD COLUMN status TEXT;ALTER TABLE messages ADD COLUMN sender_jid TEXT;"
)
# The outbox's own file (`webhooks.sqlite3`), its only version.
OUTBOX_V0 = """
CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
  slot TEXT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL, created REAL NOT NULL,
  only_for TEXT);
CREATE INDEX outbox_slot_seq ON outbox (slot, seq);
CREATE TABLE outbox_consumers (consumer TEXT PRIMARY KEY, start_seq INTEGER NOT NULL,
  disabled TEXT, disabled_for TEXT);
CREATE TABLE outbox_lanes (consumer TEXT NOT NULL, slot TEXT NOT NULL, seq INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0, last_error TEXT,
  PRIMARY KEY (consumer, slot));
CREATE TABLE outbox_dead (consumer TEXT NOT NULL, seq INTEGER NOT NULL, slot TEXT NOT NULL,
  event_id TEXT NOT NULL, type TEXT NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL,
  at REAL NOT NULL, PRIMARY KEY (consumer, seq));
"""


def old_queue(path: Path, version: int) -> None:
    """A queue file at `version` (the queue's own steps, which never change once shipped)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(QUEUE_V0)
    migrate(db, QUEUE_MIGRATIONS[:version])
    db.execute(
        "INSERT INTO outbound (slot, wa_message_id, destination, kind, body, state, not_before, "
        "created) VALUES ('A1', 'W1', ?, 'text', 'old', 'sent', 1, 1)",
        (CHAT,),
    )
    db.close()


def old_history(path: Path, version: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(HISTORY_V0)
    db.execute(
        "INSERT INTO messages VALUES ('A1', 'IN1', ?, 'in', '55119', 'Ana', 'hello', NULL, "
        "NULL, 1, 0)",
        (CHAT,),
    )
    db.execute(
        "INSERT INTO messages VALUES ('A1', 'W1', ?, 'out', 'A1', NULL, 'old', NULL, NULL, 2, 1)",
        (CHAT,),
    )
    if version >= 1:
        db.executescript(HISTORY_V1)
        db.execute("UPDATE messages SET status='delivered' WHERE wa_message_id='W1'")
        db.execute(f"UPDATE messages SET sender_jid='{CHAT}' WHERE wa_message_id='IN1'")
        db.execute("PRAGMA user_version = 1")
    db.close()


def old_outbox(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OUTBOX_V0)
    for n in range(1, 4):
        db.execute(
            "INSERT INTO outbox (id, slot, type, body, created) VALUES (?, 'A1', "
            "'session.status', '{}', 1)",
            (f"evt_{n:032x}",),
        )
    db.execute("INSERT INTO outbox_consumers VALUES ('webhook:crm', 0, NULL, NULL)")
    db.execute("INSERT INTO outbox_lanes (consumer, slot, seq) VALUES ('webhook:crm', 'A1', 1)")
    db.execute(
        "INSERT INTO outbox_dead VALUES ('webhook:crm', 2, 'A1', ?, 'session.status', 1, "
        "'http_400', 1)",
        (f"evt_{2:032x}",),
    )
    db.close()


def listing(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize(
    ("queue_version", "history_version", "outbox"),
    list(itertools.product([None, 0, 1, 2], [None, 0, 1], [False, True])),
)
async def test_a_volume_of_any_earlier_version_keeps_everything_in_one_database(
    tmp_path: Path, queue_version: int | None, history_version: int | None, outbox: bool
) -> None:
    path = tmp_path / "queue.sqlite3"
    if queue_version is not None:
        old_queue(path, queue_version)
    if history_version is not None:
        old_history(tmp_path / "history.sqlite3", history_version)
    if outbox:
        old_outbox(tmp_path / "webhooks.sqlite3")

    store = ShardStore(path)
    try:
        chat = (await store.history.open_chat(A1, CHAT))[0] if history_version is not None else []
        dead = await store.outbox.dead_letters("A1")
        await store.outbox.register("webhook:crm")
        fresh, _ = await store.queue.enqueue(A1, TextMessage(to=CHAT, text="new"))
        head = next(iter(await store.outbox.pending("webhook:crm", "A1", 1)), None)
    finally:
        store.close()

    assert rows(path, "PRAGMA user_version") == [(len(migrations(tmp_path)),)]
    names = sorted(p.name for p in listing(tmp_path) if not p.name.endswith(("-wal", "-shm")))
    expected = ["queue.sqlite3"]
    expected += ["history.sqlite3.migrated"] if history_version is not None else []
    expected += ["webhooks.sqlite3.migrated"] if outbox else []
    assert names == sorted(expected)
    if queue_version is not None:
        assert fresh.id == 2  # after the old row, which is still there
        assert rows(path, "SELECT body FROM outbound ORDER BY id") == [("old",), ("new",)]
    if history_version is not None:
        shown = {m["wa_message_id"]: (m["body"], m["status"], m["read"]) for m in chat}
        assert shown == {
            "IN1": ("hello", None, False),  # unread until opened (just now)
            "W1": ("old", "delivered" if history_version else None, True),
        }
        senders = rows(path, "SELECT sender_jid FROM messages WHERE wa_message_id='IN1'")
        assert senders == [(CHAT if history_version else None,)]
    # The old outbox's events keep their numbers: the lane is past 1, 2 is a dead letter,
    # 3 is next; the new queue row's event comes after them.
    if outbox:
        assert [d["id"] for d in dead] == [f"evt_{2:032x}"]
        assert head is not None
        assert (head.seq, head.id) == (2, f"evt_{2:032x}")
        seqs = rows(path, "SELECT seq, type FROM outbox ORDER BY seq")
        assert seqs[-1] == (4, "message.status")
    else:
        assert dead == []
        assert head is not None
        assert head.type == "message.status"

    ShardStore(path).close()  # opened again: nothing copied twice
    assert rows(path, "SELECT count(*) FROM outbox") == [(4 if outbox else 1,)]
    count = 2 if history_version is not None else 0
    assert rows(path, "SELECT count(*) FROM messages") == [(count,)]


def test_an_old_file_left_by_a_crash_after_its_copy_is_renamed_not_copied_again(
    tmp_path: Path,
) -> None:
    old_history(tmp_path / "history.sqlite3", 1)
    old_outbox(tmp_path / "webhooks.sqlite3")
    ShardStore(tmp_path / "queue.sqlite3").close()
    for name in ("history.sqlite3", "webhooks.sqlite3"):  # as if the rename never happened
        shutil.copy(tmp_path / f"{name}.migrated", tmp_path / name)
    ShardStore(tmp_path / "queue.sqlite3").close()
    assert not (tmp_path / "history.sqlite3").exists()
    assert rows(tmp_path / "queue.sqlite3", "SELECT count(*) FROM messages") == [(2,)]
    assert rows(tmp_path / "queue.sqlite3", "SELECT count(*) FROM outbox") == [(3,)]


# -- one transaction: the change and its events ---------------------------------------


def refuse(path: Path, table: str) -> None:
    """Make every insert into `table` fail (another connection: as a full disk would)."""
    with sqlite3.connect(path) as db:
        db.execute(
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )


def allow(path: Path, table: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"DROP TRIGGER refuse_{table}")


def inbound(n: int) -> dict[str, Any]:
    return {
        "slot": "A1",
        "from": "55119",
        "to": "A1",
        "body": f"hi {n}",
        "chat_id": CHAT,
        "wa_message_id": f"IN{n}",
        "from_me": False,
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = ShardStore(tmp_path / "queue.sqlite3")
    yield opened
    opened.close()


def counts(path: Path) -> dict[str, Any]:
    return {
        "messages": rows(path, "SELECT count(*) FROM messages")[0][0],
        "events": rows(path, "SELECT type, json_extract(body, '$.data.state') FROM outbox"),
        "outbound": rows(path, "SELECT state FROM outbound"),
    }


async def test_an_inbound_message_and_its_event_commit_together(
    store: ShardStore, tmp_path: Path
) -> None:
    path = tmp_path / "queue.sqlite3"
    refuse(path, "outbox")
    with pytest.raises(sqlite3.IntegrityError):
        await store.history.record(A1, "in", inbound(1))
    assert counts(path)["messages"] == 0  # the event failed: the message is not stored
    allow(path, "outbox")
    refuse(path, "messages")
    with pytest.raises(sqlite3.IntegrityError):
        await store.history.record(A1, "in", inbound(1))
    assert counts(path)["events"] == []
    allow(path, "messages")
    assert await store.history.record(A1, "in", inbound(1))
    assert not await store.history.record(A1, "in", inbound(1))  # again: no second event
    assert counts(path) == {"messages": 1, "events": [("message.received", None)], "outbound": []}


async def test_a_failed_group_commit_leaves_neither_rows_nor_events(
    store: ShardStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(OutboundQueue, "_commit", staticmethod(fail))
    answers = await asyncio.gather(
        *(store.queue.enqueue(A1, TextMessage(to=CHAT, text=f"m{i}")) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(a, sqlite3.OperationalError) for a in answers)
    assert counts(tmp_path / "queue.sqlite3") == {"messages": 0, "events": [], "outbound": []}


async def test_one_request_whose_event_fails_leaves_the_others_and_their_events(
    store: ShardStore, tmp_path: Path
) -> None:
    path = tmp_path / "queue.sqlite3"
    with sqlite3.connect(path) as db:  # the outbox refuses the third request's event only
        db.execute(
            "CREATE TRIGGER refuse_one BEFORE INSERT ON outbox "
            "WHEN NEW.slot = 'A3' BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    answers = await asyncio.gather(
        *(
            store.queue.enqueue(Slot.parse(f"A{i}"), TextMessage(to=CHAT, text=f"m{i}"))
            for i in range(1, 6)
        ),
        return_exceptions=True,
    )
    assert store.queue.stats.commits == 1
    assert isinstance(answers[2], sqlite3.IntegrityError)
    found = counts(path)
    assert len(found["outbound"]) == 4
    assert found["events"] == [("message.status", "queued")] * 4
    ids = rows(path, "SELECT slot, json_extract(body, '$.data.id') FROM outbox ORDER BY seq")
    assert ids == rows(path, "SELECT slot, id FROM outbound ORDER BY id")
    assert "A3" not in {slot for slot, _ in ids}


async def test_finish_and_receipts_commit_with_their_events_or_not_at_all(
    store: ShardStore, tmp_path: Path
) -> None:
    path = tmp_path / "queue.sqlite3"
    row, _ = await store.queue.enqueue(A1, TextMessage(to=CHAT, text="x"))
    refuse(path, "outbox")
    with pytest.raises(sqlite3.IntegrityError):
        await store.queue.finish(row.id, "sent", None)
    assert counts(path)["outbound"] == [("queued",)]
    assert counts(path)["messages"] == 0  # nor the history's copy
    allow(path, "outbox")
    refuse(path, "messages")  # the history's copy fails: the row stays queued, no event
    with pytest.raises(sqlite3.IntegrityError):
        await store.queue.finish(row.id, "sent", None)
    assert counts(path)["outbound"] == [("queued",)]
    allow(path, "messages")
    assert await store.queue.finish(row.id, "sent", None) == "sent"
    refuse(path, "outbox")
    with pytest.raises(sqlite3.IntegrityError):
        await store.queue.receipt(A1, [row.wa_message_id], "delivered", CHAT)
    assert counts(path)["outbound"] == [("sent",)]
    allow(path, "outbox")
    moved = await store.queue.receipt(A1, [row.wa_message_id], "delivered", CHAT)
    assert [m["state"] for m in moved] == ["delivered"]
    states = [s for _, s in counts(path)["events"]]
    assert states == ["queued", "sent", "delivered"]


async def test_a_receipt_before_the_send_returned_is_reported_after_sent(
    store: ShardStore, tmp_path: Path
) -> None:
    row, _ = await store.queue.enqueue(A1, TextMessage(to=CHAT, text="x"))
    assert await store.queue.receipt(A1, [row.wa_message_id], "read", CHAT) == []
    assert await store.queue.finish(row.id, "sent", None) == "read"
    failed, _ = await store.queue.enqueue(A1, TextMessage(to=CHAT, text="y"))
    await store.queue.finish(failed.id, "failed", "not_on_whatsapp")
    events = rows(
        tmp_path / "queue.sqlite3",
        "SELECT json_extract(body, '$.data.id'), json_extract(body, '$.data.state'), "
        "json_extract(body, '$.data.reason') FROM outbox ORDER BY seq",
    )
    assert events == [
        (row.id, "queued", None),
        (row.id, "sent", None),
        (row.id, "read", None),
        (failed.id, "queued", None),
        (failed.id, "failed", "not_on_whatsapp"),
    ]


async def test_lane_moves_are_read_back_at_once_written_together_and_never_go_back(
    store: ShardStore, tmp_path: Path
) -> None:
    path, consumer = tmp_path / "queue.sqlite3", "webhook:crm"
    await store.outbox.register(consumer)
    await store.outbox.write([Event.new("session.status", "A1", {"n": n}) for n in range(3)])
    first, second, third = await store.outbox.pending(consumer, "A1", 16)
    store.outbox.done(consumer, first)
    store.outbox.done(consumer, second)
    # Not on disk yet, perhaps; but the next read of the outbox sees both moves.
    assert [e.seq for e in await store.outbox.pending(consumer, "A1", 16)] == [third.seq]
    store.outbox.done(consumer, third)
    store.outbox.done(consumer, first)  # a late move: the lane stays where it is
    await store.outbox.flush()
    assert rows(path, "SELECT slot, seq FROM outbox_lanes") == [("A1", third.seq)]
    assert await store.outbox.pending(consumer, "A1", 16) == []
