"""A SQLite file the simulator's workers share, as the simulated WhatsApp server's state.

Every worker process of a simulated fleet opens the same file; WAL mode and
`BEGIN IMMEDIATE` transactions give them one order of changes, and a lock keeps
the one connection of a process to one thread at a time.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SharedFile:
    """`FILE` in a directory, created with `SCHEMA` (idempotent) on first use."""

    FILE: str
    SCHEMA: str

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(self.SCHEMA)
        return self._db

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one `BEGIN IMMEDIATE` transaction, rolled back if it raises."""
        with self._lock:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return result

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
