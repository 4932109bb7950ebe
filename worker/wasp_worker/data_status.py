"""What the shard's database holds, for `GET /data/status`: counts, size, last change.

Counting messages reads the whole table (SQLite keeps no row count), about a
millisecond per 20,000 rows: a status call, not one for every request.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from wasp_worker.db import SerialDatabase


def status(db: sqlite3.Connection) -> dict[str, Any]:
    """Counts, bytes on disk (the file and its WAL), the last write and the last change, the
    change log's size and horizons."""
    count = {
        name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        for name in ("messages", "conversations", "contacts", "changes")
    }
    horizons = db.execute("SELECT count(*), min(seq), max(seq) FROM sync_horizon").fetchone()
    tombstones = db.execute(
        "SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL"
    ).fetchone()[0]
    found = db.execute("SELECT seq FROM sqlite_sequence WHERE name='changes'").fetchone()
    main = Path(db.execute("PRAGMA database_list").fetchone()[2])
    files = [path for path in (main, main.with_name(main.name + "-wal")) if path.exists()]
    stats = [path.stat() for path in files]
    return {
        "messages": count["messages"],
        "conversations": count["conversations"],
        "contacts": count["contacts"],
        "tombstones": tombstones,
        "database_bytes": sum(s.st_size for s in stats),
        "last_write": max((s.st_mtime for s in stats), default=None),
        "last_change_seq": found[0] if found else 0,
        # The sync change log (`wasp_worker.compaction`): its rows, and the slots whose old
        # rows were compacted with the lowest and highest of their horizons.
        "change_rows": count["changes"],
        "sync_horizon": {"slots": horizons[0], "lowest": horizons[1], "highest": horizons[2]},
    }


async def read(store: SerialDatabase) -> dict[str, Any]:
    return await store.call(status)
