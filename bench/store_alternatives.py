"""Where a read misses its goal, the same SQL next to a changed one, on the same file.

Each pair is two forms of a query: the one the worker ran before and the one it runs now,
or two it could run,
both as plain SQL on one sqlite3 connection, taken in turns (`interleaved`), so the
difference is the query's. A write (openChat's read mark) runs inside a transaction
that is rolled back, on a copy, so every call does the same work.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.store_reads import interleaved, percentiles

Statement = tuple[str, tuple[Any, ...]]
MIN_CALLS = 15  # the slow "now" of a pair still gets a p99 worth reading


def _reads(db: sqlite3.Connection, statements: list[Statement]) -> Callable[[], None]:
    def call() -> None:
        for sql, args in statements:
            db.execute(sql, args).fetchall()

    return call


def _rolled_back(db: sqlite3.Connection, statement: Statement) -> Callable[[], None]:
    def call() -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(*statement).fetchall()
        finally:
            db.execute("ROLLBACK")

    return call


def compare(
    database: Path,
    search: str,
    slot: str,
    slots: list[str],
    fts: str,
    chat: tuple[str, str],
) -> dict[str, dict[str, Any]]:
    """`search` is the worker's search SELECT with a `{where}` and an `{order}` hole;
    `fts` the FTS5 query the worker makes of a common word (the last word a prefix);
    `chat` the busiest (slot, chat_id)."""
    by_time = "m.timestamp DESC, m.slot DESC, m.id DESC"
    by_id = "messages_fts.rowid DESC"
    one = "AND m.slot=? "
    many = f"AND m.slot IN ({','.join('?' * len(slots))}) "
    pairs: dict[str, dict[str, Callable[[sqlite3.Connection], Callable[[], None]]]] = {
        "search one account, a common word: sorted by timestamp (before) / by id (now)": {
            "now": lambda db: _reads(db, [(search.format(where=one, order=by_time), (fts, slot))]),
            "suggested": lambda db: _reads(
                db, [(search.format(where=one, order=by_id), (fts, slot))]
            ),
        },
        "search one account, a common word: as a prefix (now) / as a whole word": {
            "now": lambda db: _reads(db, [(search.format(where=one, order=by_id), (fts, slot))]),
            "suggested": lambda db: _reads(
                db, [(search.format(where=one, order=by_id), (fts.removesuffix(" *"), slot))]
            ),
        },
        "search all 50 accounts, a common word: by timestamp (before) / by id (now)": {
            "now": lambda db: _reads(
                db, [(search.format(where=many, order=by_time), (fts, *slots))]
            ),
            "suggested": lambda db: _reads(
                db, [(search.format(where=many, order=by_id), (fts, *slots))]
            ),
        },
        "openChat's read mark, busiest chat: without (before) / with direction='in' (now)": {
            "now": lambda db: _rolled_back(
                db,
                (
                    "UPDATE messages SET read=1 WHERE slot=? AND chat_id=? AND read=0 "
                    "RETURNING wa_message_id",
                    chat,
                ),
            ),
            "suggested": lambda db: _rolled_back(
                db,
                (
                    "UPDATE messages SET read=1 WHERE slot=? AND chat_id=? AND direction='in' "
                    "AND read=0 RETURNING wa_message_id",
                    chat,
                ),
            ),
        },
    }
    results: dict[str, dict[str, Any]] = {}
    with closing(sqlite3.connect(database, isolation_level=None)) as db:
        for name, pair in pairs.items():
            samples = interleaved(
                {kind: make(db) for kind, make in pair.items()}, min_calls=MIN_CALLS
            )
            results[name] = {
                kind: {**percentiles(got), "calls": len(got)} for kind, got in samples.items()
            }
    return results
