"""One SQLite connection on its own thread: SQLite blocks, the event loop must not.

Every call runs on the connection's dedicated thread, in order, so the
connection is never shared between threads and writes never interleave.
Reads that write nothing may instead go to `read`: a few read-only connections,
each on a thread of its own, each call in one read transaction (one snapshot of
the file, as consistent as a call on the writer's thread). WAL lets them read
while the writer commits, so an API read does not queue behind a write and its
fsync.
A file's schema version is SQLite's `user_version`: migration N takes a file
from version N to N + 1 in one transaction, so a volume written by an older
worker is brought up to date, rows and all, the first time a newer one opens it.
A migration is a script of statements, or a function given the connection
(inside that transaction) for a step SQL alone cannot say, such as copying
rows in from another file.

`transaction(db)` is how code that writes more than one statement (a change and
the outbox events that report it) makes them commit together or not at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Migration = str | Callable[[sqlite3.Connection], None]
# Read-only connections beside the writer: the machine's cores, not more (a read holds the
# GIL while Python makes its rows).
READERS = 2


class SerialDatabase:
    """A WAL-mode SQLite file with `synchronous=FULL`: a commit is on disk when it returns.

    `schema` is the first version's (idempotent: `CREATE ... IF NOT EXISTS`);
    `migrations[n]` takes version n to n + 1 (a script, or a function of the
    connection), run inside a transaction that also records the new version.
    """

    def __init__(
        self,
        path: Path,
        schema: str,
        name: str,
        migrations: Sequence[Migration] = (),
        readers: int = READERS,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.db: sqlite3.Connection = self._thread.submit(
            self._open, path, schema, tuple(migrations)
        ).result()
        # Opened after the writer made the schema and migrated: a reader sees the new file.
        self._uri = f"{path.resolve().as_uri()}?mode=ro"
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix=f"{name}-read")
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()

    @staticmethod
    def _open(path: Path, schema: str, migrations: tuple[Migration, ...]) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
        migrate(db, migrations)
        return db

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self.db)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)`, which must not write, on a read-only connection, in one
        read transaction: its statements see one state of the file, whatever commits
        meanwhile, and every write committed before the call."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._snapshot, fn)

    def _snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
            with self._opened_lock:
                self._opened.append(db)
            self._local.db = db
        db.execute("BEGIN")
        try:
            return fn(db)
        finally:
            db.execute("COMMIT")  # ends the read transaction: the next call sees what is new

    def call_blocking(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread and wait: only before serving."""
        return self._thread.submit(fn, self.db).result()

    def close(self) -> None:
        self._readers.shutdown()  # waits for the reads under way; then no thread uses theirs
        for reader in self._opened:
            reader.close()
        self._thread.submit(self.db.close).result()
        self._thread.shutdown()


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`; any error rolls every statement back, and raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def migrate(db: sqlite3.Connection, migrations: tuple[Migration, ...]) -> None:
    """Run the migrations this file has not had yet, each in one transaction."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(migrations):
        raise RuntimeError(
            f"database schema version {version} is newer than this program's "
            f"({len(migrations)}): run the newer worker, or restore a backup"
        )
    for number in range(version, len(migrations)):
        step = migrations[number]
        with transaction(db):
            if isinstance(step, str):
                for statement in _statements(step):
                    db.execute(statement)
            else:
                step(db)
            db.execute(f"PRAGMA user_version = {number + 1}")


def _statements(script: str) -> list[str]:
    """A migration script's statements (`;`-separated; none may contain a `;` of its own)."""
    return [part.strip() for part in script.split(";") if part.strip()]
