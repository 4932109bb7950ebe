"""`SerialDatabase.read`: reads on read-only connections beside the writer's thread, each
in one snapshot, and unable to write."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from wasp_worker.data_state import DATABASE
from wasp_worker.db import SerialDatabase
from wasp_worker.state import HISTORY

from tests.worker.test_data_reads import A1, BASE, message


def _count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_a_read_runs_while_the_writer_is_busy_and_sees_one_snapshot(
    tmp_path: Path,
) -> None:
    store = SerialDatabase(tmp_path / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v INTEGER)", "t")
    try:
        await store.call(lambda db: db.execute("INSERT INTO t VALUES (1)"))
        # The writer's thread held (as by a long write and its fsync): a read still answers.
        gate = threading.Event()
        held = asyncio.ensure_future(store.call(lambda db: gate.wait(10)))
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(store.read(_count), 2) == 1
        gate.set()
        await held

        def twice(db: sqlite3.Connection) -> tuple[int, int]:
            """A write commits between the read's two statements: the second does not
            see it (one snapshot per read)."""
            first = _count(db)
            store.call_blocking(lambda writer: writer.execute("INSERT INTO t VALUES (2)"))
            return first, _count(db)

        assert await store.read(twice) == (1, 1)
        assert await store.read(_count) == 2, "the next read sees what was committed"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.read(lambda db: db.execute("INSERT INTO t VALUES (3)"))
        assert await store.call(_count) == 2
    finally:
        store.close()


async def test_the_data_reads_answer_while_the_writer_is_busy(worker: Any) -> None:
    """The API's reads go to the read-only connections: a long write does not hold them."""
    chat = "5511900000001@s.whatsapp.net"
    assert await worker.app[HISTORY].record(A1, "in", message(1, chat, 10.0, "hello there"))
    gate = threading.Event()
    held = asyncio.ensure_future(worker.app[DATABASE].call(lambda db: gate.wait(10)))
    try:
        await asyncio.sleep(0.05)
        for path in (
            f"{BASE}/conversations",
            f"{BASE}/conversations/{chat}",
            f"{BASE}/conversations/{chat}/messages",
            f"{BASE}/search?q=hello",
            f"{BASE}/sync",
            f"{BASE}/unread",
            "/data/conversations",
            "/data/search?q=hello",
            "/data/unread",
        ):
            answer = await asyncio.wait_for(worker.get(path), 2)
            assert answer.status == 200, (path, await answer.text())
        lookup = await asyncio.wait_for(
            worker.post(f"{BASE}/contacts/lookup", json={"ids": [chat]}), 2
        )
        assert lookup.status == 200
        assert not held.done(), "the writer was held all along"
    finally:
        gate.set()
        await held
