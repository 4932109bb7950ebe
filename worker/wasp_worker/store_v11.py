"""Version 11 of the shard's database: a bounded sync change log.

- `sync_horizon`: per slot, the seq up to which compaction has cleared the slot's
  `changes` (`wasp_worker.compaction`: each live item's latest change carried past
  it, the rest deleted). A sync cursor below it may have missed rows that are gone,
  so it is refused (410); from the start, and from any cursor at or above it, sync
  answers as before.
- `change_marks`: (time, the last seq then), written by each compaction pass. The
  rows older than the window are those at or below the seq of the newest mark older
  than the window, so `changes` needs no time column (no rewrite of its millions of
  rows, no 8 more bytes each). The rows already there take the migration's own time:
  a client gets the whole window from the upgrade on, however old they are.
- `changes.carried`: 1 on a row compaction carried forward (a copy of an item's
  latest change, not a change), which only a client walking from the start needs;
  `changes_incremental` indexes the other rows, so an incremental sync skips any
  number of carried rows at no cost. Adding a column with a constant default
  rewrites no row.
"""

from __future__ import annotations

import sqlite3
import time

STATEMENTS = (
    "CREATE TABLE sync_horizon (slot TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE change_marks (at REAL PRIMARY KEY, seq INTEGER NOT NULL)",
    "ALTER TABLE changes ADD COLUMN carried INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX changes_incremental ON changes (slot, seq) WHERE carried = 0",
)


def last_seq(db: sqlite3.Connection) -> int:
    """The last seq `changes` gave (AUTOINCREMENT keeps it even when its row is gone)."""
    found = db.execute("SELECT seq FROM sqlite_sequence WHERE name='changes'").fetchone()
    return int(found[0]) if found else 0


def migrate(db: sqlite3.Connection) -> None:
    for statement in STATEMENTS:
        db.execute(statement)
    db.execute("INSERT INTO change_marks (at, seq) VALUES (?, ?)", (time.time(), last_seq(db)))
