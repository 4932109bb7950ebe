"""The shard's one database: `queue.sqlite3` on its volume, holding all of its state.

The outbound queue (`outbound`, `lid_map`, `pacing`), the history (`messages`)
and the webhook outbox (`outbox`, `outbox_consumers`, `outbox_lanes`,
`outbox_dead`) are tables of one file behind one `SerialDatabase`, so a change
and the outbox events that report it commit in one transaction. They cannot be
files of their own: SQLite makes a transaction atomic across attached files
only in rollback-journal mode, never in WAL mode, which the queue needs.

Versions (`PRAGMA user_version`): 0 to 2 are the queue's own (`queue.SCHEMA`,
`queue.MIGRATIONS`); 3 adds the history's table and 4 the outbox's; 5 copies in
the messages of `history.sqlite3`, the history's own file before this one
(either of its versions), and 6 the outbox of `webhooks.sqlite3`; 7 adds the
conversations and the sync sequence, back-filled from the messages; 8 gives messages
and conversations stable ids and adds the full-text index and contacts
(`store_v8`); 9 adds replies, reactions, poll votes and the payload of richer
messages (`store_v9`); 10 keeps receipts that came before their message's id was
known (`store_v10`); 11 adds the sync log's horizons and time marks, so compaction can
bound it (`store_v11`); 12 keeps the chat settings the API set until WhatsApp has them
(`store_v12`); 13 indexes the unread conversations apart (`store_v13`); 14 records
the WhatsApp account each slot is linked to (`store_v14`). Each step
commits with its version, so a copy happens once; its source is then renamed
`<name>.migrated` (kept for the operator to delete). A source still there after
its step (the worker died between the commit and the rename) is one already
copied: it is renamed on the next start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from wasp_worker import (
    conversations,
    history,
    queue,
    store_v8,
    store_v9,
    store_v10,
    store_v11,
    store_v12,
    store_v13,
    store_v14,
)
from wasp_worker.conversations import Conversations
from wasp_worker.db import Migration, SerialDatabase
from wasp_worker.history import History
from wasp_worker.queue import OutboundQueue
from wasp_worker.webhooks import outbox
from wasp_worker.webhooks.outbox import Outbox

FILE = "queue.sqlite3"
OLD_HISTORY = "history.sqlite3"
OLD_OUTBOX = "webhooks.sqlite3"
MIGRATED = ".migrated"
OUTBOX_TABLES = ("outbox", "outbox_consumers", "outbox_lanes", "outbox_dead")


def _copy_history(source: Path) -> Callable[[sqlite3.Connection], None]:
    """Copy the messages of an old `history.sqlite3` in (version 0 had no receipt
    status and no sender JID: those stay empty, as that version's migration left them)."""

    def copy(db: sqlite3.Connection) -> None:
        if not source.exists():
            return
        with closing(sqlite3.connect(source)) as old:
            present = {row[1] for row in old.execute("PRAGMA table_info(messages)")}
            if not present:
                return
            columns = history.V3_COLUMNS
            absent = {"from_me": "0"}  # NOT NULL; an old row came from another device
            chosen = ", ".join(c if c in present else absent.get(c, "NULL") for c in columns)
            rows = old.execute(f"SELECT {chosen} FROM messages ORDER BY rowid")
            db.executemany(
                f"INSERT OR IGNORE INTO messages ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                rows,
            )

    return copy


def _copy_outbox(source: Path) -> Callable[[sqlite3.Connection], None]:
    """Copy an old `webhooks.sqlite3` outbox in, sequence numbers and all: each
    consumer's lane position and dead letters name events by them. The outbox tables
    are new and empty at this step (version 4 made them; nothing writes before the
    migrations end), so the numbers cannot collide."""

    def copy(db: sqlite3.Connection) -> None:
        if not source.exists():
            return
        with closing(sqlite3.connect(source)) as old:
            found = {row[0] for row in old.execute("SELECT name FROM sqlite_master")}
            for table in OUTBOX_TABLES:
                if table not in found:
                    continue
                columns = [row[1] for row in old.execute(f"PRAGMA table_info({table})")]
                rows = old.execute(f"SELECT {', '.join(columns)} FROM {table}")
                db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})",
                    rows,
                )

    return copy


def migrations(folder: Path) -> tuple[Migration, ...]:
    """Every version step of the shard's database in `folder` (the old files' copies
    read from there)."""
    return (
        *queue.MIGRATIONS,
        history.SCHEMA,
        outbox.SCHEMA,
        _copy_history(folder / OLD_HISTORY),
        _copy_outbox(folder / OLD_OUTBOX),
        conversations.backfill,
        store_v8.migrate,
        store_v9.MIGRATION,
        store_v10.MIGRATION,
        store_v11.migrate,
        store_v12.MIGRATION,
        store_v13.MIGRATION,
        store_v14.MIGRATION,
    )


def _retire_old_files(folder: Path) -> None:
    """Rename the old files whose contents the migrations copied in."""
    for name in (OLD_HISTORY, OLD_OUTBOX):
        source = folder / name
        if source.exists():
            source.rename(folder / (name + MIGRATED))


class ShardStore:
    """The shard's database and the parts that share it: the outbox, the history, the
    conversations and the outbound queue. The composition root opens it once and closes it last."""

    def __init__(self, path: Path) -> None:
        self.db = SerialDatabase(path, queue.SCHEMA, "shard-db", migrations(path.parent))
        _retire_old_files(path.parent)
        self.outbox = Outbox(self.db)
        self.history = History(self.db, self.outbox)
        self.conversations = Conversations(self.db)
        self.queue = OutboundQueue(self.db, self.outbox)

    @classmethod
    def in_folder(cls, work_dir: Path) -> ShardStore:
        return cls(work_dir / FILE)

    def close(self) -> None:
        self.db.close()
