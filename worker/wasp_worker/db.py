"""One SQLite connection on its own thread: SQLite blocks, the event loop must not.

Every call runs on the connection's dedicated thread, in order, so the
connection is never shared between threads and writes never interleave.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SerialDatabase:
    """A WAL-mode SQLite file with `synchronous=FULL`: a commit is on disk when it returns."""

    def __init__(self, path: Path, schema: str, name: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.db: sqlite3.Connection = self._thread.submit(self._open, path, schema).result()

    @staticmethod
    def _open(path: Path, schema: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
        return db

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread and wait: for start-up (migrations),
        before the event loop serves anything."""
        return self._thread.submit(fn, self.db).result()

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self.db)

    def close(self) -> None:
        self._thread.submit(self.db.close).result()
        self._thread.shutdown()
