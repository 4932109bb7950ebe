"""One SQLite connection on its own thread: SQLite blocks, the event loop must not.

Every call runs on the connection's dedicated thread, in order, so the
connection is never shared between threads and writes never interleave.
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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Migration = str | Callable[[sqlite3.Connection], None]


class SerialDatabase:
    """A WAL-mode SQLite file with `synchronous=FULL`: a commit is on disk when it returns.

    `schema` is the first version's (idempotent: `CREATE ... IF NOT EXISTS`);
    `migrations[n]` takes version n to n + 1 (a script, or a function of the
    connection), run inside a transaction that also records the new version.
    """

    def __init__(
        self, path: Path, schema: str, name: str, migrations: Sequence[Migration] = ()
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.db: sqlite3.Connection = self._thread.submit(
            self._open, path, schema, tuple(migrations)
        ).result()

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

    def call_blocking(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread and wait: only before serving."""
        return self._thread.submit(fn, self.db).result()

    def close(self) -> None:
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
