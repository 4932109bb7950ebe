"""The chat settings the API set, for WhatsApp: which wait to be sent, and which of them a
setting read back from the phone may overwrite (table `chat_settings_set`, `store_v12`).

A conversation PATCH records its pin, archive and mute (`record`) in its own
transaction: one row per field, its latest value and when it was set. The row is
*pending* until WhatsApp takes it (`settle`: then *sent*); `settings_sender` sends the
pending ones when the session connects, and drops a row its last attempt failed
(`fail`), or that WhatsApp refused when the PATCH sent it (`forget`).

A setting the phone set, read back from WhatsApp, goes through `screen` in the
transaction that would store it. For a field the API set:

- the phone's change has a time (the simulator's do) later than the API's: the phone
  wins. It is stored and the API's row goes, unsent if still pending;
- it has a time, not later: the API's value stays (the phone's change is older);
- it has no time (neonize: whatsmeow's record of the settings keeps none): while the
  API's row is pending, the API's value stays and is sent next (it wins once); once
  sent, the phone's read-back is stored as any other, and the row goes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wasp.slots import Slot
from wasp_worker.backends.base import ChatSettingsChange
from wasp_worker.db import SerialDatabase, transaction

FIELDS = ("pinned", "archived", "muted_until")
_KEY = "slot=? AND chat_id=? AND field=?"


def _stored(value: Any) -> float | None:
    return None if value is None else float(value)  # a bool as 0/1, as SQLite has it


def _read(name: str, value: float | None) -> Any:
    return bool(value) if name in ("pinned", "archived") else value


def record(
    db: sqlite3.Connection, slot: Slot, chat_id: str, settings: Mapping[str, Any], at: float
) -> None:
    """The pin, archive and mute `settings` (a PATCH body) sets, pending from `at`, in the
    caller's transaction; a field set again replaces its row (the latest value counts)."""
    db.executemany(
        "INSERT INTO chat_settings_set (slot, chat_id, field, value, set_at) VALUES (?,?,?,?,?) "
        "ON CONFLICT (slot, chat_id, field) DO UPDATE SET value=excluded.value, "
        "set_at=excluded.set_at, sent=0, attempts=0",
        [
            (str(slot), chat_id, name, _stored(settings[name]), at)
            for name in FIELDS
            if name in settings
        ],
    )


def screen(
    db: sqlite3.Connection,
    slot: Slot,
    chat_id: str,
    settings: Mapping[str, Any],
    at: float | None,
) -> dict[str, Any]:
    """Of the settings the phone set (at `at`, None: unknown), those the store takes, by the
    rule above, in the caller's transaction; the API's rows the phone's overrule go."""
    kept: dict[str, Any] = {}
    for name, value in settings.items():
        row = db.execute(
            f"SELECT set_at, sent FROM chat_settings_set WHERE {_KEY}", (str(slot), chat_id, name)
        ).fetchone()
        if row is not None:
            set_at, sent = row
            if (at is not None and at <= set_at) or (at is None and not sent):
                continue  # the API's stays
            db.execute(f"DELETE FROM chat_settings_set WHERE {_KEY}", (str(slot), chat_id, name))
        kept[name] = value
    return kept


@dataclass
class Pending:
    """Pending fields of one chat set at one time: what one send tells WhatsApp."""

    chat_id: str
    set_at: float
    values: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    last_message_at: float | None = None  # the chat's last message's (an archive names it)

    @property
    def change(self) -> ChatSettingsChange:
        return ChatSettingsChange.of(self.values, at=self.set_at)


def waiting(db: sqlite3.Connection, slot: Slot) -> list[Pending]:
    """The slot's pending settings, per chat and time set, oldest first."""
    groups: dict[tuple[str, float], Pending] = {}
    for chat_id, name, value, set_at, attempts, last in db.execute(
        "SELECT p.chat_id, p.field, p.value, p.set_at, p.attempts, c.last_timestamp "
        "FROM chat_settings_set p LEFT JOIN conversations c "
        "ON c.slot = p.slot AND c.chat_id = p.chat_id "
        "WHERE p.slot=? AND p.sent=0 ORDER BY p.set_at, p.chat_id",
        (str(slot),),
    ):
        entry = groups.setdefault((chat_id, set_at), Pending(chat_id, set_at, {}, attempts, last))
        entry.values[name] = _read(name, value)
        entry.attempts = max(entry.attempts, attempts)
    return list(groups.values())


def pending_fields(db: sqlite3.Connection, slot: Slot, chat_id: str) -> list[str]:
    """The chat's fields whose API value WhatsApp does not have yet."""
    return [
        row[0]
        for row in db.execute(
            "SELECT field FROM chat_settings_set WHERE slot=? AND chat_id=? AND sent=0 "
            "ORDER BY field",
            (str(slot), chat_id),
        )
    ]


def drop(db: sqlite3.Connection, slot: Slot) -> int:
    """Delete every record of the slot, in the caller's transaction; how many."""
    return db.execute("DELETE FROM chat_settings_set WHERE slot=?", (str(slot),)).rowcount


class PendingSettings:
    """The table's operations on the shard's database thread."""

    def __init__(self, store: SerialDatabase) -> None:
        self._store = store

    async def waiting(self, slot: Slot) -> list[Pending]:
        return await self._store.read(lambda db: waiting(db, slot))

    async def fields(self, slot: Slot, chat_id: str) -> list[str]:
        return await self._store.read(lambda db: pending_fields(db, slot, chat_id))

    async def settle(self, slot: Slot, chat_id: str, names: list[str], set_at: float) -> None:
        """WhatsApp took these fields as set at `set_at`: sent (a field set again since
        stays pending)."""
        await self._each(
            f"UPDATE chat_settings_set SET sent=1 WHERE {_KEY} AND set_at=?",
            slot,
            chat_id,
            names,
            set_at,
        )

    async def forget(self, slot: Slot, chat_id: str, names: list[str], set_at: float) -> None:
        """These fields as set at `set_at` are not for WhatsApp after all."""
        await self._each(
            f"DELETE FROM chat_settings_set WHERE {_KEY} AND set_at=?", slot, chat_id, names, set_at
        )

    async def drop_slot(self, slot: Slot) -> int:
        """Every record of the slot (its account went: they were that account's); how many."""

        def write(db: sqlite3.Connection) -> int:
            with transaction(db):
                return drop(db, slot)

        return await self._store.call(write)

    async def fail(self, slot: Slot, chat_id: str, names: list[str], set_at: float) -> int:
        """One more failed send of these fields as set at `set_at`: their attempts now."""

        def write(db: sqlite3.Connection) -> int:
            with transaction(db):
                counts = [
                    row[0]
                    for name in names
                    for row in db.execute(
                        "UPDATE chat_settings_set SET attempts=attempts+1 "
                        f"WHERE {_KEY} AND set_at=? AND sent=0 RETURNING attempts",
                        (str(slot), chat_id, name, set_at),
                    ).fetchall()
                ]
            return max(counts, default=0)

        return await self._store.call(write)

    async def _each(
        self, sql: str, slot: Slot, chat_id: str, names: list[str], set_at: float
    ) -> None:
        def write(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.executemany(sql, [(str(slot), chat_id, name, set_at) for name in names])

        await self._store.call(write)
