"""Compaction of the sync change log: `changes` stays bounded by the live items, not by history.

Every change appends a row to `changes` (about two per inbound message), and sync
reads them after a cursor. Past a window (`retention.syncHorizonDays`, the
RETENTION_SYNC_HORIZON_DAYS variable) a slot's old rows are thinned: its horizon H
moves to the slot's highest seq older than the window, and a row at or below H
goes when a later row names the same item (superseded) or its item no longer
exists (a message retention deleted). A row at or below H that is the latest of a
live item stays, so a client syncing from the start still gets every live item,
once. Rows above H are never touched, so a cursor at or above H gives the same
pages as before; a cursor below H may name rows that are gone, and sync refuses it
(410: start again).

"Older than the window" needs the time of a change: each pass records a mark
(now, the last seq), `change_marks`; the rows at or below the seq of the newest
mark older than the window are older than it (store version 11 explains why there
is no time column).

A pass walks each slot's rows newest first, a batch per database call: a row whose
(kind, key) was already seen in this walk is superseded. The keys seen wait in a
temporary table of the writer's connection (on SQLite's temporary file, not in
Python's memory: a slot may have millions). Each batch deletes its doomed rows and
records the slot's horizon in one transaction, so no row at or below a cursor's
reach is gone before the horizon says so. Rows written during a pass have larger
seqs than its walk: they are kept, for the next pass to judge.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.events import EventLog
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
    recorded) and where its walk starts (after its last row); None: nothing to thin."""
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
) -> tuple[int, int | None]:
    """One batch of the slot's walk: its rows below seq `before`, newest first. Deletes
    those at or below `horizon` that are superseded or whose item is gone, and records the
    horizon, in one transaction. Answers (rows deleted, where the next batch starts or
    None at the end)."""
    with transaction(db):
        rows = db.execute(
            "SELECT seq, kind, key FROM changes WHERE slot=? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (slot, before, batch),
        ).fetchall()
        doomed: list[int] = []
        kept: dict[str, list[tuple[int, str]]] = {"message": [], "conversation": []}
        for seq, kind, key in rows:
            first = db.execute(
                f"INSERT OR IGNORE INTO {SEEN} (kind, key) VALUES (?, ?)", (kind, key)
            ).rowcount
            if seq > horizon:
                continue
            if first:
                kept[kind].append((seq, key))
            else:
                doomed.append(seq)  # a later row names the same item
        for kind, latest in kept.items():
            if latest:
                live = _live(db, slot, kind, list({key for _, key in latest}))
                doomed.extend(seq for seq, key in latest if key not in live)
        db.execute(
            "INSERT INTO sync_horizon (slot, seq) VALUES (?, ?) "
            "ON CONFLICT (slot) DO UPDATE SET seq = max(seq, excluded.seq)",
            (slot, horizon),
        )
        for start in range(0, len(doomed), 500):
            part = doomed[start : start + 500]
            db.execute(f"DELETE FROM changes WHERE seq IN ({','.join('?' * len(part))})", part)
    following = rows[-1][0] if len(rows) == batch else None
    return len(doomed), following


def forget(db: sqlite3.Connection) -> None:
    """Empty the walk's keys (a slot's walk is over)."""
    db.execute(f"DELETE FROM {SEEN}")


@dataclass
class Compactor:
    """Thins the shard's change log past its window, now (`compact`) or every interval (`run`)."""

    store: SerialDatabase
    horizon_days: int
    log: EventLog
    batch: int = 2000
    now: Callable[[], float] = time.time

    async def compact(self) -> int:
        """One pass over every slot's rows; how many rows were deleted."""
        started, now = time.monotonic(), self.now()
        old = await self.store.call(partial(mark, now=now, cutoff=now - self.horizon_days * DAY_S))
        removed = slots = 0
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
                deleted, following = await self.store.call(
                    partial(step, slot=slot, horizon=horizon, before=following, batch=self.batch)
                )
                removed += deleted
            await self.store.call(forget)
        self.log.emit(
            "sync_compaction_pass",
            deleted=removed,
            slots=slots,
            horizonDays=self.horizon_days,
            seconds=round(time.monotonic() - started, 3),
        )
        return removed

    async def run(self, interval_s: float, active: Callable[[], bool]) -> None:
        """A pass every `interval_s`, the first at once, while `active()` (the shard's lease
        is held). A failed pass is logged and the next one tries again."""
        while True:
            if active():
                try:
                    await self.compact()
                except Exception as error:
                    self.log.emit("sync_compaction_failed", error=type(error).__name__)
            await asyncio.sleep(interval_s)
