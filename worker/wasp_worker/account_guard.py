"""One owner per account: a slot re-linked to another WhatsApp account never sends the
old account's queued messages.

The store and the outbound queue are keyed by slot only. When a slot's session
connects, `connected` (a `SessionManager.on_connected` hook, run before the session
counts as CONNECTED, so before the runner may send for it) compares the account the
backend reports (`KnowsAccount.account_jid`) with the one recorded for the slot
(`slot_accounts`, `store_v14`), by the JID's user part: a device suffix
(`123:5@s.whatsapp.net`) is the same account. None recorded: it is recorded. The same
one: nothing changes, its queued messages go. Another one: in one transaction, every
queued row of the slot ends `failed` (`ACCOUNT_CHANGED`, with its `message.status`
event, as the queue fails a send), the chat settings kept for WhatsApp are dropped,
and the new account is recorded; one `account_changed` event is logged. A backend
that does not know the account (None) changes nothing.

The slot's stored conversations and messages are not separated per account.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from wasp.slots import Slot
from wasp_worker import pending_settings
from wasp_worker.backends.base import Backend, KnowsAccount
from wasp_worker.db import transaction
from wasp_worker.events import EventLog
from wasp_worker.queue import Outbound
from wasp_worker.store import ShardStore

ACCOUNT_CHANGED = "account_changed: the slot is now linked to another WhatsApp account"


def same_account(a: str, b: str) -> bool:
    """Whether two JIDs name one account: their user parts (before any device suffix
    and the server) are equal."""
    return _user(a) == _user(b)


def _user(jid: str) -> str:
    return jid.split("@", 1)[0].split(":", 1)[0]


@dataclass(frozen=True)
class Linked:
    """What a connect found: the account recorded before (None: none was), the one now,
    and the queued rows that ended failed because the two differ."""

    before: str | None
    now: str
    failed: list[Outbound]


class AccountGuard:
    def __init__(
        self,
        store: ShardStore,
        backend: Backend,
        log: EventLog,
        emit: Callable[[str, dict[str, Any]], None] | None = None,
        failed: Counter | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.log = log
        self.emit = emit  # the live feed's: a failed row's wa:message_status
        self.failed = failed  # the runner's count of messages that ended failed

    async def connected(self, slot: Slot) -> None:
        """The slot's session connected (not yet CONNECTED for the runner): check its
        account against the recorded one."""
        backend = self.backend
        jid = backend.account_jid(slot) if isinstance(backend, KnowsAccount) else None
        if not jid:
            return
        queue = self.store.queue

        def write(db: sqlite3.Connection) -> Linked:
            with transaction(db):
                row = db.execute("SELECT jid FROM slot_accounts WHERE slot=?", (str(slot),))
                found = row.fetchone()
                before = found[0] if found else None
                if before is not None and same_account(before, jid):
                    return Linked(before, jid, [])
                failed = queue.fail_queued(db, slot, ACCOUNT_CHANGED) if before else []
                if before is not None:
                    pending_settings.drop(db, slot)
                db.execute(
                    "INSERT INTO slot_accounts (slot, jid, since) VALUES (?, ?, ?) "
                    "ON CONFLICT (slot) DO UPDATE SET jid=excluded.jid, since=excluded.since",
                    (str(slot), jid, time.time()),
                )
            queue.release_files(failed)
            return Linked(before, jid, failed)

        linked = await self.store.db.call(write)
        if linked.before is None:
            self.log.emit("account_recorded", slot=str(slot), jid=jid)
            return
        if same_account(linked.before, linked.now):
            return
        self.store.outbox.added()
        self.log.emit(
            "account_changed",
            slot=str(slot),
            before=linked.before,
            now=linked.now,
            failed=len(linked.failed),
        )
        if self.failed is not None:
            self.failed.inc(len(linked.failed))
        if self.emit is not None:
            for message in linked.failed:
                self.emit("wa:message_status", message.status("failed", ACCOUNT_CHANGED))

    async def account(self, slot: Slot) -> str | None:
        """The account recorded for the slot (None: none connected there yet)."""

        def read(db: sqlite3.Connection) -> str | None:
            found = db.execute("SELECT jid FROM slot_accounts WHERE slot=?", (str(slot),))
            row = found.fetchone()
            return row[0] if row else None

        return await self.store.db.read(read)
