"""Compaction of the sync change log: `changes` stays bounded by the live items, not by history.

Every change appends a row to `changes` (about two per inbound message), and sync
reads them after a cursor. Past a window (`retention.syncHorizonDays`, the
RETENTION_SYNC_HORIZON_DAYS variable) a slot's old rows go: its horizon H moves to
the slot's highest seq older than the window, and every row at or below H is
deleted. A row superseded by a later one for the same (kind, key), or whose item no
longer exists (a message retention deleted), goes for good; the latest row of a
live item is carried forward: deleted and appended again at the end of the log,
marked `carried`, so a client syncing from the start (a walk) still gets every live
item, once. An incremental client skips the carried rows (`History.sync` says why
that is safe): they are copies, not changes.

Why carried and not left in place: a cursor below H is refused (410), since the
rows after it may be gone, and it must be: such a client may hold an item whose
deletion it never heard of. A client walking from the start through rows left
below H would hold such cursors too, and be refused forever. With nothing left at
or below H, a walk from the start only ever holds cursors above it. Rows above H
are never touched and carried rows come after every existing one, so a cursor at or
above H gives the same full pages as before.

"Older than the window" needs the time of a change: each pass records a mark
(now, the last seq), `change_marks`; the rows at or below the seq of the newest
mark older than the window are older than it (store version 11 explains why there
is no time column). A carried row is new by this measure: it is carried again a
window later if nothing supersedes it.

A pass walks each slot's rows newest first, a batch per database call: a row whose
(kind, key) was already seen in this walk is superseded. The keys seen wait in a
temporary table of the writer's connection (on SQLite's temporary file, not in
Python's memory: a slot may have millions), so one pass at a time per database.
Each batch deletes and carries its rows and records the slot's horizon in one
transaction, so no row a cursor at or above the horizon can reach is gone, and none
is missing at any moment. Rows written during a pass have larger seqs than its
walk: they are kept, for the next pass to judge. Since whole runs of old rows go,
their pages return to SQLite's free list and the log's new rows reuse them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.events import EventLog
from wasp_worker.maintenance import every
from wasp_worker.store_v11 import last_seq

DAY_S = 86_400
SEEN = "temp.compaction_seen"
# What a change's key names, per kind: the table and the column that hold the item.
ITEMS = {"message": ("messages", "wa_message_id"), "conversation": ("conversations", "chat_id")}


def mark(db: sqlite3.Connection, now: float, cutoff: float) -> int | None:
    """Record (now, the last seq) and answer the seq of the newest mark older than
    `cutoff` (None: no change is known to be that old). Older marks are dropped."""
    with transaction(db):
        db.execute(
            "INSERT OR REPLACE INTO change_marks (at, seq) VALUES (?, ?)", (now, last_seq(db))
        )
        found = db.execute(
            "SELECT at, seq FROM change_marks WHERE at <= ? ORDER BY at DESC LIMIT 1", (cutoff,)
        ).fetchone()
        if found is None:
            return None
        db.execute("DELETE FROM change_marks WHERE at < ?", (found[0],))
        return int(found[1])


def next_slot(db: sqlite3.Connection, after: str) -> str | None:
    """The next slot (in text order) with rows in `changes`: one index seek, not a scan."""
    found = db.execute("SELECT min(slot) FROM changes WHERE slot > ?", (after,)).fetchone()
    return found[0] if found else None


def start_slot(db: sqlite3.Connection, slot: str, old: int) -> tuple[int, int] | None:
    """The slot's new horizon (its highest seq at or below `old`, never lower than the one
    recorded) and where its walk starts (after its last row); None: nothing is that old."""
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {SEEN} (kind TEXT NOT NULL, key TEXT NOT NULL, "
        "PRIMARY KEY (kind, key)) WITHOUT ROWID"
    )
    db.execute(f"DELETE FROM {SEEN}")
    recorded = db.execute("SELECT seq FROM sync_horizon WHERE slot=?", (slot,)).fetchone()
    below = db.execute(
        "SELECT max(seq) FROM changes WHERE slot=? AND seq <= ?", (slot, old)
    ).fetchone()[0]
    candidates = [int(v) for v in (recorded[0] if recorded else None, below) if v is not None]
    if not candidates:
        return None
    top = db.execute("SELECT max(seq) FROM changes WHERE slot=?", (slot,)).fetchone()[0]
    return max(candidates), int(top or 0) + 1


def _live(db: sqlite3.Connection, slot: str, kind: str, keys: list[str]) -> set[str]:
    table, column = ITEMS[kind]
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        found.update(
            row[0]
            for row in db.execute(
                f"SELECT {column} FROM {table} WHERE slot=? "
                f"AND {column} IN ({','.join('?' * len(part))})",
                (slot, *part),
            )
        )
    return found


def step(
    db: sqlite3.Connection, slot: str, horizon: int, before: int, batch: int
) -> tuple[int, int, int | None]:
    """One batch of the slot's walk: its rows below seq `before`, newest first. Of those at or
    below `horizon`, deletes the superseded ones and those whose item is gone, and carries
    the latest of each live item forward (a new row at the end of the log), recording the
    horizon, in one transaction. Answers (rows deleted, rows carried, where the next batch
    starts or None at the end)."""
    with transaction(db):
        rows = db.execute(
            "SELECT seq, kind, key FROM changes WHERE slot=? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (slot, before, batch),
        ).fetchall()
        doomed: list[int] = []
        latest: dict[str, list[tuple[int, str]]] = {"message": [], "conversation": []}
        for seq, kind, key in rows:
            first = db.execute(
                f"INSERT OR IGNORE INTO {SEEN} (kind, key) VALUES (?, ?)", (kind, key)
            ).rowcount
            if seq > horizon:
                continue
            doomed.append(seq)  # below the horizon no row stays where it is
            if first:
                latest[kind].append((seq, key))
        carried: list[tuple[int, str, str]] = []
        for kind, found in latest.items():
            if found:
                live = _live(db, slot, kind, list({key for _, key in found}))
                carried.extend((seq, kind, key) for seq, key in found if key in live)
        db.execute(
            "INSERT INTO sync_horizon (slot, seq) VALUES (?, ?) "
            "ON CONFLICT (slot) DO UPDATE SET seq = max(seq, excluded.seq)",
            (slot, horizon),
        )
        for start in range(0, len(doomed), 500):
            part = doomed[start : start + 500]
            db.execute(f"DELETE FROM changes WHERE seq IN ({','.join('?' * len(part))})", part)
        db.executemany(
            "INSERT INTO changes (slot, kind, key, carried) VALUES (?, ?, ?, 1)",
            [(slot, kind, key) for _, kind, key in sorted(carried)],
        )
    following = rows[-1][0] if len(rows) == batch else None
    return len(doomed) - len(carried), len(carried), following


def forget(db: sqlite3.Connection) -> None:
    """Empty the walk's keys (a slot's walk is over)."""
    db.execute(f"DELETE FROM {SEEN}")


@dataclass(frozen=True)
class Compacted:
    """What a pass did: rows deleted for good, and rows carried forward past the window."""

    deleted: int
    carried: int


@dataclass
class Compactor:
    """Thins the shard's change log past its window, now (`compact`) or every interval (`run`)."""

    store: SerialDatabase
    horizon_days: int
    log: EventLog
    batch: int = 2000
    now: Callable[[], float] = time.time

    async def compact(self) -> Compacted:
        """One pass over every slot's rows: how many rows went, and how many were carried."""
        started, now = time.monotonic(), self.now()
        old = await self.store.call(partial(mark, now=now, cutoff=now - self.horizon_days * DAY_S))
        removed = carried = slots = 0
        slot: str | None = ""
        while old is not None and slot is not None:
            slot = await self.store.call(partial(next_slot, after=slot))
            if slot is None:
                break
            begun = await self.store.call(partial(start_slot, slot=slot, old=old))
            if begun is None:
                continue
            horizon, before = begun
            slots += 1
            following: int | None = before
            while following is not None:
                deleted, moved, following = await self.store.call(
                    partial(step, slot=slot, horizon=horizon, before=following, batch=self.batch)
                )
                removed, carried = removed + deleted, carried + moved
            await self.store.call(forget)
        self.log.emit(
            "sync_compaction_pass",
            deleted=removed,
            carried=carried,
            slots=slots,
            horizonDays=self.horizon_days,
            seconds=round(time.monotonic() - started, 3),
        )
        return Compacted(removed, carried)

    async def run(self, interval_s: float, active: Callable[[], bool]) -> None:
        """A pass every `interval_s` while the shard's lease is held (`maintenance.every`)."""
        await every(interval_s, active, self.compact, self.log, "sync_compaction_failed")
