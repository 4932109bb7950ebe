"""The outbox: events waiting for their consumers, on the shard's volume.

An event is added with `add(connection, events)` inside the caller's open
transaction, on any SQLite connection whose database has `SCHEMA` (`create`):
the change and the event it reports commit together or not at all. The
outbox's tables live in the shard's one database (`wasp_worker.store`), beside
the queue and the history whose changes its events report; after a commit
that added events, the writer calls `Outbox.added()` to wake the consumers.

Consumers (each webhook subscription; a broker later) never change the events:
each keeps, per slot, the last event it is done with (`outbox_lanes.seq`) and
its attempts on the next one. So consumers progress independently, each in
order per slot, and a new consumer starts at the events added after it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from wasp.webhooks import Event
from wasp_worker.db import SerialDatabase, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,            -- the event's id (webhook-id): the same on every attempt
    slot TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,          -- the event as sent (JSON)
    created REAL NOT NULL,       -- epoch seconds: the horizon counts from here
    only_for TEXT                -- a replayed dead letter: the one consumer it is for
);
CREATE INDEX IF NOT EXISTS outbox_slot_seq ON outbox (slot, seq);
CREATE TABLE IF NOT EXISTS outbox_consumers (
    consumer TEXT PRIMARY KEY,
    start_seq INTEGER NOT NULL,  -- events after this one are its own
    disabled TEXT,               -- why it stopped (a 410), NULL while it delivers
    disabled_for TEXT            -- the target that said so: another target re-enables
);
CREATE TABLE IF NOT EXISTS outbox_lanes (
    consumer TEXT NOT NULL,
    slot TEXT NOT NULL,
    seq INTEGER NOT NULL,        -- the last event done with (delivered, skipped, dead)
    attempts INTEGER NOT NULL DEFAULT 0,  -- on the next event
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (consumer, slot)
);
CREATE TABLE IF NOT EXISTS outbox_dead (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    slot TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (consumer, seq)
);
"""


def create(db: sqlite3.Connection) -> None:
    """Create the tables if missing (idempotent, a migration step). It commits: call it
    outside any transaction."""
    db.executescript(SCHEMA)


def add(db: sqlite3.Connection, events: Iterable[Event]) -> None:
    """Write the events in the caller's open transaction; the caller commits.

    Refuses a connection outside a transaction: an event written on its own
    could report a change that then rolls back."""
    if not db.in_transaction:
        raise RuntimeError("outbox.add needs an open transaction (BEGIN first)")
    db.executemany(
        "INSERT INTO outbox (id, slot, type, body, created) VALUES (?, ?, ?, ?, ?)",
        [(e.id, str(e.slot), e.type, e.model_dump_json(), e.timestamp.timestamp()) for e in events],
    )


@dataclass(frozen=True)
class Stored:
    """An event as the outbox holds it, with the lane's attempts on it."""

    seq: int
    id: str
    slot: str
    type: str
    body: bytes
    created: float
    attempts: int
    next_at: float

    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass(frozen=True)
class Backlog:
    """A consumer's lanes with events waiting, each with when its next one was added,
    and how many dead letters it has."""

    heads: dict[str, float]
    dead: int

    @property
    def oldest(self) -> float | None:
        return min(self.heads.values(), default=None)


@dataclass(frozen=True)
class ConsumerState:
    disabled: str | None
    disabled_for: str | None


T = TypeVar("T")

# A lane only moves forward: a move written late (its call was cancelled after
# the thread had it) never takes it back.
_ADVANCE = """
    INSERT INTO outbox_lanes (consumer, slot, seq) VALUES (?, ?, ?)
    ON CONFLICT (consumer, slot) DO UPDATE SET seq = excluded.seq, attempts = 0,
    next_at = 0, last_error = NULL WHERE excluded.seq > outbox_lanes.seq
"""

# Every slot with events, one index lookup each (SQLite's DISTINCT would read the whole
# index), and the creation time of the consumer's next event there, if it has one: the
# outbox keeps delivered events for the horizon, so reading them all again on every
# look would grow with a day's traffic.
_HEADS = """
    WITH RECURSIVE slots(slot) AS (
        SELECT MIN(slot) FROM outbox
        UNION ALL
        SELECT (SELECT MIN(slot) FROM outbox WHERE slot > slots.slot) FROM slots
        WHERE slots.slot IS NOT NULL
    )
    SELECT s.slot, (
        SELECT o.created FROM outbox o
        WHERE o.slot = s.slot AND o.seq > COALESCE(l.seq, c.start_seq)
        AND (o.only_for IS NULL OR o.only_for = c.consumer)
        ORDER BY o.seq LIMIT 1
    ) AS head
    FROM slots s JOIN outbox_consumers c ON c.consumer = ?
    LEFT JOIN outbox_lanes l ON l.consumer = c.consumer AND l.slot = s.slot
    WHERE s.slot IS NOT NULL
"""


def _nothing(db: sqlite3.Connection) -> None:
    return None


class Outbox:
    """The outbox's tables in the shard's database, every call on its thread."""

    def __init__(self, store: SerialDatabase) -> None:
        self._db = store
        self._wakers: list[Callable[[], None]] = []
        self._moves: dict[tuple[str, str], int] = {}  # (consumer, slot): seq, not yet written
        self._writing: asyncio.Future[None] | None = None

    def on_added(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever a commit added events (the deliverer's look-now)."""
        self._wakers.append(wake)

    def added(self) -> None:
        """Events were committed: wake the consumers. Writers call it after COMMIT."""
        for wake in self._wakers:
            wake()

    async def write(self, events: list[Event]) -> None:
        """Add events in a transaction of their own (for changes kept nowhere else)."""

        def write(db: sqlite3.Connection) -> None:
            with transaction(db):
                add(db, events)

        await self._call(write)
        self.added()

    async def register(self, consumer: str) -> ConsumerState:
        """The consumer's state; a new one starts after the events already here."""

        def register(db: sqlite3.Connection) -> ConsumerState:
            db.execute(
                "INSERT OR IGNORE INTO outbox_consumers (consumer, start_seq) "
                "SELECT ?, COALESCE(MAX(seq), 0) FROM outbox",
                (consumer,),
            )
            row = db.execute(
                "SELECT disabled, disabled_for FROM outbox_consumers WHERE consumer = ?",
                (consumer,),
            ).fetchone()
            return ConsumerState(row[0], row[1])

        return await self._call(register)

    async def pending(self, consumer: str, slot: str, limit: int) -> list[Stored]:
        """The consumer's next events of the slot, at most `limit`, in order; the first
        carries the lane's attempts on it. A lane that is retrying gets its next event
        only: a receiver that is down costs one event in memory per lane."""

        def pending(db: sqlite3.Connection) -> list[Stored]:
            lane = db.execute(
                "SELECT COALESCE(l.seq, c.start_seq), COALESCE(l.attempts, 0), "
                "COALESCE(l.next_at, 0) FROM outbox_consumers c "
                "LEFT JOIN outbox_lanes l ON l.consumer = c.consumer AND l.slot = ? "
                "WHERE c.consumer = ?",
                (slot, consumer),
            ).fetchone()
            if lane is None:
                return []
            after, attempts, next_at = lane
            first = (attempts, next_at)
            rows = db.execute(
                "SELECT seq, id, slot, type, body, created FROM outbox "
                "WHERE slot = ? AND seq > ? AND (only_for IS NULL OR only_for = ?) "
                "ORDER BY seq LIMIT ?",
                (slot, after, consumer, 1 if attempts else limit),
            ).fetchall()
            return [
                Stored(
                    seq, id, slot, type, body.encode(), created, *(first if n == 0 else (0, 0.0))
                )
                for n, (seq, id, slot, type, body, created) in enumerate(rows)
            ]

        return await self._call(pending)

    def done(self, consumer: str, event: Stored) -> None:
        """Move the lane past the event (delivered, or not wanted).

        The lane goes on at once; the move is written in the background, with every
        other lane's moves since the last write in one transaction, and before any
        later call on the outbox reads or writes lane state. A crash before it is
        written sends the event again: at least once, never marked before its 2xx."""
        key = (consumer, event.slot)
        self._moves[key] = max(event.seq, self._moves.get(key, event.seq))
        if self._writing is None:
            self._writing = asyncio.ensure_future(self._write_moves())

    async def _write_moves(self) -> None:
        try:
            while self._moves:
                await self._call(_nothing)
        except sqlite3.Error:
            pass  # the moves are kept: the lane's next call writes them, or raises this
        finally:
            self._writing = None

    async def flush(self) -> None:
        """Write the lanes' moves now (before stopping)."""
        await self._call(_nothing)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the database thread, after the lanes' moves so far (one transaction).
        Taking the moves and queueing the call are one step, so the thread writes them
        in the order they were made."""
        moves, self._moves = self._moves, {}

        def call(db: sqlite3.Connection) -> T:
            if moves:
                with transaction(db):
                    db.executemany(
                        _ADVANCE, [(consumer, slot, seq) for (consumer, slot), seq in moves.items()]
                    )
            return fn(db)

        try:
            return await self._db.call(call)
        except BaseException:
            for key, seq in moves.items():  # not written: keep them, unless superseded
                self._moves.setdefault(key, seq)
            raise

    @staticmethod
    def _advance(db: sqlite3.Connection, consumer: str, event: Stored) -> None:
        db.execute(_ADVANCE, (consumer, event.slot, event.seq))

    async def retry(
        self, consumer: str, event: Stored, attempts: int, next_at: float, error: str
    ) -> None:
        """Record a failed attempt on the lane's next event and when to try again."""

        def retry(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO outbox_lanes (consumer, slot, seq, attempts, next_at, last_error) "
                "SELECT ?, ?, COALESCE(l.seq, c.start_seq), ?, ?, ? FROM outbox_consumers c "
                "LEFT JOIN outbox_lanes l ON l.consumer = c.consumer AND l.slot = ? "
                "WHERE c.consumer = ? "
                "ON CONFLICT (consumer, slot) DO UPDATE SET attempts = excluded.attempts, "
                "next_at = excluded.next_at, last_error = excluded.last_error",
                (consumer, event.slot, attempts, next_at, error, event.slot, consumer),
            )

        await self._call(retry)

    async def dead(self, consumer: str, event: Stored, attempts: int, reason: str) -> None:
        """A dead letter: kept for listing and replay, and the lane moves on."""

        def dead(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR REPLACE INTO outbox_dead VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    consumer,
                    event.seq,
                    event.slot,
                    event.id,
                    event.type,
                    attempts,
                    reason,
                    time.time(),
                ),
            )
            self._advance(db, consumer, event)
            db.execute("COMMIT")

        await self._call(dead)

    async def disable(self, consumer: str, reason: str | None, target: str | None) -> None:
        """Stop (reason given) or resume (None) the consumer's deliveries."""
        await self._call(
            lambda db: db.execute(
                "UPDATE outbox_consumers SET disabled = ?, disabled_for = ? WHERE consumer = ?",
                (reason, target, consumer),
            )
        )

    async def dead_letters(self, slot: str, consumer: str | None = None) -> list[dict[str, Any]]:
        rows = await self._call(
            lambda db: db.execute(
                "SELECT consumer, event_id, type, attempts, reason, at FROM outbox_dead "
                "WHERE slot = ? AND (? IS NULL OR consumer = ?) ORDER BY seq",
                (slot, consumer, consumer),
            ).fetchall()
        )
        keys = ("consumer", "id", "type", "attempts", "reason", "at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def replay(self, slot: str, consumer: str | None, ids: list[str] | None) -> int:
        """Dead letters sent again, each to its consumer only, after the slot's newer
        events (same event id: receivers drop what they already have); re-enables
        the consumers it names."""

        def replay(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(
                "SELECT d.consumer, d.seq, o.id, o.slot, o.type, o.body, o.created "
                "FROM outbox_dead d JOIN outbox o ON o.seq = d.seq "
                "WHERE d.slot = ? AND (? IS NULL OR d.consumer = ?) ORDER BY d.seq",
                (slot, consumer, consumer),
            ).fetchall()
            rows = [row for row in rows if ids is None or row[2] in ids]
            for name, seq, *event in rows:
                db.execute(
                    "INSERT INTO outbox (id, slot, type, body, created, only_for) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (*event[:4], time.time(), name),
                )
                db.execute("DELETE FROM outbox_dead WHERE consumer = ? AND seq = ?", (name, seq))
                db.execute(
                    "UPDATE outbox_consumers SET disabled = NULL, disabled_for = NULL "
                    "WHERE consumer = ?",
                    (name,),
                )
            db.execute("COMMIT")
            return len(rows)

        return await self._call(replay)

    async def backlog(self, consumer: str) -> Backlog:
        """The slots with events this consumer has not done with, and its dead letters."""

        def backlog(db: sqlite3.Connection) -> Backlog:
            rows = db.execute(_HEADS, (consumer,)).fetchall()
            heads = {slot: head for slot, head in rows if head is not None}
            dead = db.execute(
                "SELECT COUNT(*) FROM outbox_dead WHERE consumer = ?", (consumer,)
            ).fetchone()[0]
            return Backlog(heads, dead)

        return await self._call(backlog)

    async def prune(self, before: float) -> int:
        """Delete events older than `before` that no consumer still waits for and no
        dead letter names."""

        def prune(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "DELETE FROM outbox WHERE created < ? "
                "AND seq NOT IN (SELECT seq FROM outbox_dead) "
                "AND NOT EXISTS (SELECT 1 FROM outbox_consumers c "
                "  LEFT JOIN outbox_lanes l ON l.consumer = c.consumer AND l.slot = outbox.slot "
                "  WHERE c.disabled IS NULL AND outbox.seq > COALESCE(l.seq, c.start_seq) "
                "  AND (outbox.only_for IS NULL OR outbox.only_for = c.consumer))",
                (before,),
            )
            return cursor.rowcount

        return await self._call(prune)
