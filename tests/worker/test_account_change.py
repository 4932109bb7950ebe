"""One owner per account: a slot re-linked to another WhatsApp account never sends the old
account's queued messages; the same account back sends them all.

The simulator's account is fixed per slot, so another account linked to a slot is a
fault it cannot produce: the backend here is the sending engine's fake, which also says
whose account a slot's session is (`account_jid`), and the session's connects are its
status reports, as a backend makes them.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from wasp_worker.account_guard import ACCOUNT_CHANGED, AccountGuard
from wasp_worker.backends.base import StatusEvent
from wasp_worker.backends.simulator import jid_of, phone_of
from wasp_worker.db import migrate
from wasp_worker.events import EventLog
from wasp_worker.queue import SCHEMA as QUEUE_V0
from wasp_worker.sessions import SessionManager, SessionState
from wasp_worker.state import LOG
from wasp_worker.store import ShardStore, migrations

from tests.support.waiting import eventually_async
from tests.worker.test_outbound import login, wait_state
from tests.worker.test_pending_settings import worker_at
from tests.worker.test_remote_changes import rows
from tests.worker.test_sending import Engine, FakeBackend, chat, engine_factory, wait_until
from wasp.slots import Slot

__all__ = ["engine_factory"]  # the fixture, shared with the sending engine's tests

A1, A2 = Slot.parse("A1"), Slot.parse("A2")
OLD, NEW = "5511900000001@s.whatsapp.net", "5511900000002@s.whatsapp.net"
QUIET_S = 0.5  # long enough for the runner to have sent anything it would (it looks every 0.2 s)


def jid(n: int) -> str:
    """`chat(n)` as the queue addresses it."""
    return f"{chat(n)}@s.whatsapp.net"


@dataclass
class Relinkable(FakeBackend):
    """The fake backend, knowing whose account each slot's session is (settable)."""

    accounts: dict[str, str] = field(default_factory=dict)

    def account_jid(self, slot: Slot) -> str | None:
        return self.accounts.get(str(slot))


@dataclass
class Shard:
    engine: Engine
    backend: Relinkable
    sessions: SessionManager
    log: io.StringIO
    live: list[tuple[str, dict[str, Any]]]

    async def connect(self, slot: Slot, jid: str | None) -> None:
        """The slot's session connects as `jid`'s account (None: the backend cannot say)."""
        if jid is None:
            self.backend.accounts.pop(str(slot), None)
        else:
            self.backend.accounts[str(slot)] = jid
        self.sessions.states.setdefault(slot, SessionState())
        await self.sessions._on_status(StatusEvent(slot, "CONNECTED"))
        self.engine.runner.wake.set()

    async def unlink(self, slot: Slot) -> None:
        """The phone unlinked the device: the session is gone until a new login."""
        await self.sessions._on_status(StatusEvent(slot, "DISCONNECTED", logged_out=True))

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        return self.engine.queue._db.execute(query).fetchall()

    def failed_events(self) -> list[dict[str, Any]]:
        bodies = self.sql("SELECT body FROM outbox WHERE type='message.status' ORDER BY seq")
        data = [json.loads(body)["data"] for (body,) in bodies]
        return [d for d in data if d["state"] == "failed"]

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log.getvalue().splitlines()]
        return [line for line in lines if line["event"] == name]

    async def sent(self, rows: list[int], within: float = 5.0) -> None:
        """Wait until every one of `rows` was sent."""

        def all_sent() -> bool:
            states = {r[0]: r[1] for r in self.sql("SELECT id, state FROM outbound")}
            return all(states[row] == "sent" for row in rows)

        await wait_until(all_sent, within, f"rows {rows} sent")


@pytest.fixture
async def shard(engine_factory: Callable[..., Any]) -> Shard:
    backend = Relinkable()
    engine: Engine = await engine_factory([], backend)
    sessions = engine.runner.sessions
    log = io.StringIO()
    sessions.log = EventLog(stream=log)
    live: list[tuple[str, dict[str, Any]]] = []
    guard = AccountGuard(
        engine.store, backend, sessions.log, lambda *e: live.append(e), engine.runner.failed
    )
    sessions.on_connected.append(guard.connected)
    return Shard(engine, backend, sessions, log, live)


def keep_settings(shard: Shard, slot: Slot) -> None:
    """A pin kept for WhatsApp on one of the slot's chats (`chat_settings_set`)."""
    shard.engine.queue._db.execute(
        "INSERT INTO chat_settings_set (slot, chat_id, field, value, set_at) "
        "VALUES (?, ?, 'pinned', 1, 1)",
        (str(slot), jid(1)),
    )


async def test_the_same_account_back_sends_everything_queued_while_it_was_away(
    shard: Shard,
) -> None:
    await shard.connect(A1, OLD)
    await shard.unlink(A1)
    rows = [await shard.engine.send("A1", chat(n)) for n in range(3)]
    await asyncio.sleep(QUIET_S)
    assert shard.backend.log == []  # not connected: nothing goes
    keep_settings(shard, A1)
    await shard.connect(A1, OLD)
    await shard.sent(rows)
    assert sorted(s.to for s in shard.backend.log) == sorted(jid(n) for n in range(3))
    assert shard.failed_events() == []
    assert shard.sql("SELECT count(*) FROM chat_settings_set") == [(1,)]
    assert shard.sql("SELECT slot, jid FROM slot_accounts") == [("A1", OLD)]
    assert shard.events("account_changed") == []


async def test_another_account_fails_the_queued_messages_and_sends_none_of_them(
    shard: Shard,
) -> None:
    async def slow_hook(slot: Slot) -> None:
        # Another connect hook that takes a while: were the session CONNECTED already,
        # the runner would send meanwhile.
        shard.engine.runner.wake.set()
        await asyncio.sleep(QUIET_S)

    shard.sessions.on_connected.insert(0, slow_hook)
    await shard.connect(A1, OLD)
    await shard.connect(A2, "5511900000009@s.whatsapp.net")
    await shard.unlink(A1)
    await shard.unlink(A2)
    rows = [await shard.engine.send("A1", chat(n)) for n in range(3)]
    other = await shard.engine.send("A2", chat(1))  # another slot's: untouched
    keep_settings(shard, A1)
    keep_settings(shard, A2)

    await shard.connect(A1, NEW)
    await asyncio.sleep(QUIET_S)

    assert shard.backend.log == []  # not one of the old account's messages went out
    states = await shard.engine.states()
    assert [states[row][:2] for row in rows] == [("failed", ACCOUNT_CHANGED)] * 3
    assert states[other][0] == "queued"
    failed = shard.failed_events()
    assert sorted(d["id"] for d in failed) == rows
    assert {d["reason"] for d in failed} == {ACCOUNT_CHANGED}
    shown = [data for name, data in shard.live if name == "wa:message_status"]
    assert sorted(d["id"] for d in shown) == rows
    assert {(d["state"], d["reason"]) for d in shown} == {("failed", ACCOUNT_CHANGED)}
    assert shard.sql("SELECT slot FROM chat_settings_set") == [("A2",)]
    assert shard.sql("SELECT jid FROM slot_accounts WHERE slot='A1'") == [(NEW,)]
    [changed] = shard.events("account_changed")
    assert (changed["slot"], changed["failed"]) == ("A1", 3)
    assert (changed["before"], changed["now"]) == (OLD, NEW)
    assert shard.engine.runner.failed._value.get() == 3  # counted as any failed send

    after = await shard.engine.send("A1", chat(4))  # the new account's own: it goes
    await shard.sent([after])
    assert [s.to for s in shard.backend.log] == [jid(4)]


async def test_a_change_that_cannot_commit_fails_nothing_and_sends_nothing(shard: Shard) -> None:
    """The change is one transaction: the kept settings refusing to go (a trigger: a fault
    SQLite itself would not make) leaves every row queued and the old account recorded,
    and the session does not count as CONNECTED, so nothing is sent either."""
    await shard.connect(A1, OLD)
    await shard.unlink(A1)
    rows = [await shard.engine.send("A1", chat(n)) for n in range(2)]
    keep_settings(shard, A1)
    shard.engine.queue._db.execute(
        "CREATE TRIGGER refuse BEFORE DELETE ON chat_settings_set "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        await shard.connect(A1, NEW)
    await asyncio.sleep(QUIET_S)
    assert shard.sessions.states[A1].status != "CONNECTED"
    assert shard.backend.log == []
    states = await shard.engine.states()
    assert [states[row][0] for row in rows] == ["queued", "queued"]
    assert shard.failed_events() == []
    assert shard.sql("SELECT jid FROM slot_accounts WHERE slot='A1'") == [(OLD,)]
    assert shard.sql("SELECT count(*) FROM chat_settings_set") == [(1,)]


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("5511900000001:5@s.whatsapp.net", "5511900000001@s.whatsapp.net"),
        ("5511900000001@s.whatsapp.net", "5511900000001:12@s.whatsapp.net"),
    ],
)
async def test_a_device_suffix_is_the_same_account(shard: Shard, first: str, then: str) -> None:
    await shard.connect(A1, first)
    await shard.unlink(A1)
    rows = [await shard.engine.send("A1", chat(n)) for n in range(2)]
    await shard.connect(A1, then)
    await shard.sent(rows)
    assert shard.failed_events() == []
    assert shard.events("account_changed") == []


async def test_a_backend_that_cannot_say_whose_account_changes_nothing(shard: Shard) -> None:
    await shard.connect(A1, OLD)
    await shard.unlink(A1)
    row = await shard.engine.send("A1", chat(1))
    await shard.connect(A1, None)
    await shard.sent([row])
    assert shard.sql("SELECT jid FROM slot_accounts WHERE slot='A1'") == [(OLD,)]


@pytest.mark.parametrize("version", range(len(migrations(Path("."))) - 1, -1, -1))
def test_a_volume_of_any_earlier_version_gets_the_slot_accounts(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "queue.sqlite3"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(QUEUE_V0)
        migrate(db, migrations(tmp_path)[:version])
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "slot_accounts" not in tables
    db.close()
    store = ShardStore(path)
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(migrations(tmp_path))
        db.execute("INSERT INTO slot_accounts VALUES ('A1', ?, 1)", (OLD,))
        columns = [r[1] for r in db.execute("PRAGMA table_info(slot_accounts)")]
        assert columns == ["slot", "jid", "since"]
        with pytest.raises(sqlite3.IntegrityError):  # one account per slot
            db.execute("INSERT INTO slot_accounts VALUES ('A1', ?, 2)", (NEW,))
    db.close()


async def test_a_worker_records_each_slots_account_and_sends_what_waited_for_it(
    tmp_path: Path,
) -> None:
    """The real worker and the simulator (whose account is fixed per slot): the account is
    recorded at the first connect, and a message queued while the session was away goes
    when it is back."""
    store = tmp_path / "data"
    async with worker_at(tmp_path, tmp_path / "whatsapp") as worker:
        await login(worker, "A1")
        await login(worker, "A2")

        async def recorded() -> bool:
            return len(rows(store, "SELECT slot FROM slot_accounts")) == 2

        await eventually_async(recorded, "both accounts recorded")
        assert rows(store, "SELECT slot, jid FROM slot_accounts ORDER BY slot") == [
            ("A1", jid_of(A1)),
            ("A2", jid_of(A2)),
        ]
        assert (await worker.post("/api/accounts/A1/destroy")).status == 200
        queued = await worker.post("/api/accounts/A1/send", json={"to": phone_of(A2), "text": "x"})
        row = (await queued.json())["message"]["id"]
        assert (await worker.post("/api/accounts/A1/connect")).status == 200
        await wait_state(worker, "A1", row, "sent")
        logged = [e["event"] for e in worker.app[LOG].recent()]
        assert logged.count("account_recorded") == 2
        assert "account_changed" not in logged
