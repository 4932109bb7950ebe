"""What the store adds to an inbound message's write, and what the database costs on disk.

Write: the same inbound messages stored two ways, alternately, in one run on the same
disk: through `History.record` (the message, its change and its conversation's, the
conversation's refresh, the full-text index by trigger, its webhook event) on a copy of
the big database, and as a plain INSERT of the same row into a bare `messages` table
(same columns, no index, no trigger) in a file of its own. Both through a
`SerialDatabase` (its thread, WAL, `synchronous=FULL`, one commit per message), so
the difference is the store's own work.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import sqlite3
import statistics
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.store import ShardStore

from bench.store_reads import percentiles
from wasp.slots import Slot

BARE = """
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY, slot TEXT, wa_message_id TEXT, chat_id TEXT, direction TEXT,
  sender TEXT, push_name TEXT, body TEXT, timestamp REAL, read INTEGER,
  sender_jid TEXT, sender_phone_jid TEXT, sender_lid TEXT, from_me INTEGER, message_type TEXT
)
"""


def _inbound(slot: str, chat_id: str, n: int) -> dict[str, Any]:
    """An inbound text's fields, as a session reports it."""
    phone = chat_id.partition("@")[0] if chat_id.endswith("@s.whatsapp.net") else "5511987650000"
    jid = f"{phone}@s.whatsapp.net"
    return {
        "slot": slot,
        "from": phone,
        "to": "5511900000000",
        "body": f"Olá, o pedido número {n} já saiu para entrega? Obrigado, até amanhã",
        "chat_id": chat_id,
        "chat_type": "group" if chat_id.endswith("@g.us") else "direct",
        "sender_jid_raw": jid,
        "push_name": "Conceição",
        "wa_message_id": f"BENCH{n:016X}",
        "timestamp": time.time(),
        "media_type": None,
        "media_url": None,
        "from_me": False,
        "sender_lid": f"{phone[::-1]}@lid",
        "sender_phone_jid": jid,
    }


def _bare_insert(fields: dict[str, Any]) -> Any:
    def write(db: sqlite3.Connection) -> None:
        with transaction(db):
            db.execute(
                "INSERT INTO messages (slot, wa_message_id, chat_id, direction, sender, "
                "push_name, body, timestamp, read, sender_jid, sender_phone_jid, sender_lid, "
                "from_me, message_type) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    fields["slot"],
                    fields["wa_message_id"],
                    fields["chat_id"],
                    "in",
                    fields["from"],
                    fields["push_name"],
                    fields["body"],
                    fields["timestamp"],
                    0,
                    fields["sender_jid_raw"],
                    fields["sender_phone_jid"],
                    fields["sender_lid"],
                    0,
                    "text",
                ),
            )

    return write


async def _write_both(database: Path, bare: Path, count: int) -> dict[str, Any]:
    with closing(sqlite3.connect(database)) as db:
        # Chats weighted by their size, as messages arrive: busy chats get most.
        chats = db.execute(
            "SELECT slot, chat_id, count(*) FROM messages GROUP BY slot, chat_id"
        ).fetchall()
    weights = list(itertools.accumulate(c[2] for c in chats))
    rng = random.Random(7)
    store = ShardStore(database)
    plain = SerialDatabase(bare, BARE, "bare")
    recorded, inserted = [], []
    try:
        for n in range(count):
            slot, chat_id, _ = chats[bisect.bisect(weights, rng.random() * weights[-1])]
            fields = _inbound(slot, chat_id, n)
            started = time.perf_counter()
            assert await store.history.record(Slot.parse(slot), "in", fields)
            recorded.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await plain.call(_bare_insert(fields))
            inserted.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
        plain.close()
    record_mean, insert_mean = statistics.fmean(recorded), statistics.fmean(inserted)
    return {
        "messages": count,
        "record": {**percentiles(recorded), "mean_ms": round(record_mean, 2)},
        "plain_insert": {**percentiles(inserted), "mean_ms": round(insert_mean, 2)},
        "ratio_mean": round(record_mean / insert_mean, 2),
    }


def write_cost(database: Path, bare: Path, count: int = 2_000) -> dict[str, Any]:
    return asyncio.run(_write_both(database, bare, count))


def disk(database: Path) -> dict[str, Any]:
    """Bytes of the file after a checkpoint, per million messages, and the shares of the
    full-text index and of the rest, from SQLite's own page accounting (dbstat)."""
    with closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        messages = db.execute("SELECT count(*) FROM messages").fetchone()[0]
        by_object = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        kinds = dict(db.execute("SELECT name, type FROM sqlite_master"))
    main = database.stat().st_size
    wal = Path(f"{database}-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    per_million = 1_000_000 / messages
    fts = sum(size for name, size in by_object.items() if name.startswith("messages_fts"))
    tables: dict[str, int] = {}
    for name, size in by_object.items():
        if name.startswith("messages_fts"):
            continue
        table = name if kinds.get(name) == "table" else "indexes"
        tables[table] = tables.get(table, 0) + size
    return {
        "messages": messages,
        "main_bytes": main,
        "wal_bytes_after_checkpoint": wal_bytes,
        "mb_per_million": round((main + wal_bytes) * per_million / 1e6, 1),
        "fts_mb_per_million": round(fts * per_million / 1e6, 1),
        "fts_share": round(fts / main, 3),
        "mb_per_million_by_part": {
            name: round(size * per_million / 1e6, 1)
            for name, size in sorted(tables.items(), key=lambda kv: -kv[1])
            if size * per_million >= 1e6
        },
    }
