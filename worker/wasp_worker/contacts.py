"""Each slot's contacts: who a person is by phone JID and by LID, and their names.

A contact is one row per slot and person, keyed by its phone JID when known,
else its LID (WhatsApp's privacy id, which hides the number). A person first
seen by LID alone and later with both identities keeps one row: the LID's row
is folded into the phone JID's. `name` is the name saved on the account's phone
(from history sync or the contact list); `push_name` the one the person chose,
which every inbound message carries. A value not given keeps the stored one.

Every inbound message upserts its sender in the message's own transaction
(`history.insert`); the backend's contact list comes through `Contacts.upsert`,
which refreshes the person's direct chat (its name is the saved one).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from wasp.slots import Slot
from wasp_worker import conversations
from wasp_worker.db import SerialDatabase, transaction

_COLUMNS = ("jid", "phone_jid", "lid", "name", "push_name", "updated_at")
_SELECT = ", ".join(_COLUMNS)
_IDENTITIES = ("phone_jid", "lid", "name", "push_name")


def _contact(slot: str, row: tuple[Any, ...]) -> dict[str, Any]:
    return {"slot": slot, **dict(zip(_COLUMNS, row, strict=True))}


def upsert(
    db: sqlite3.Connection,
    slot: Slot,
    phone_jid: str | None,
    lid: str | None,
    name: str | None = None,
    push_name: str | None = None,
    now: float | None = None,
) -> bool:
    """Merge one person into the slot's contacts, in the caller's transaction; False when
    it names no identity, or changes nothing."""
    if not phone_jid and not lid:
        return False
    # One index lookup each (an OR of the columns would read every contact of the slot).
    known = db.execute(
        f"SELECT {_SELECT} FROM contacts WHERE slot=?1 AND jid=?2 "
        f"UNION SELECT {_SELECT} FROM contacts WHERE slot=?1 AND jid=?3 "
        f"UNION SELECT {_SELECT} FROM contacts WHERE slot=?1 AND phone_jid=?2 "
        f"UNION SELECT {_SELECT} FROM contacts WHERE slot=?1 AND lid=?3",
        (str(slot), phone_jid, lid),
    ).fetchall()
    merged: dict[str, Any] = {"phone_jid": None, "lid": None, "name": None, "push_name": None}
    for row in sorted(known, key=lambda r: r[5]):  # the newest row's values win
        merged.update({k: v for k, v in zip(_COLUMNS, row, strict=True) if k in merged and v})
    given = {"phone_jid": phone_jid, "lid": lid, "name": name, "push_name": push_name}
    merged.update({k: v for k, v in given.items() if v})
    jid = merged["phone_jid"] or merged["lid"]
    same = len(known) == 1 and known[0][0] == jid
    if same and all(known[0][_COLUMNS.index(k)] == merged[k] for k in _IDENTITIES):
        return False
    db.executemany(
        "DELETE FROM contacts WHERE slot=? AND jid=?", [(str(slot), row[0]) for row in known]
    )
    db.execute(
        "INSERT INTO contacts (slot, jid, phone_jid, lid, name, push_name, updated_at) "
        "VALUES (?,?,?,?,?,?,?)",
        (
            str(slot),
            jid,
            merged["phone_jid"],
            merged["lid"],
            merged["name"],
            merged["push_name"],
            time.time() if now is None else now,
        ),
    )
    return True


def find(db: sqlite3.Connection, slot: Slot, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each id (a phone JID or a LID) that names one of the slot's contacts, and that contact."""
    found: dict[str, dict[str, Any]] = {}
    for wanted in dict.fromkeys(ids):
        row = db.execute(
            f"SELECT {_SELECT} FROM contacts WHERE slot=? AND jid=? "
            f"UNION ALL SELECT {_SELECT} FROM contacts WHERE slot=? AND phone_jid=? "
            f"UNION ALL SELECT {_SELECT} FROM contacts WHERE slot=? AND lid=? LIMIT 1",
            (str(slot), wanted) * 3,
        ).fetchone()
        if row is not None:
            found[wanted] = _contact(str(slot), row)
    return found


class Contacts:
    """The shard's contacts: written by the backends, read by the data API."""

    def __init__(self, store: SerialDatabase) -> None:
        self._store = store

    async def upsert(self, slot: Slot, contacts: list[dict[str, Any]]) -> int:
        """Merge these people (keys `phone_jid`, `lid`, `name`, `push_name`, any of them
        None or absent) into the slot's contacts, in one transaction; how many changed."""

        def write(db: sqlite3.Connection) -> int:
            changed = 0
            with transaction(db):
                for c in contacts:
                    phone, lid = c.get("phone_jid"), c.get("lid")
                    if upsert(db, slot, phone, lid, c.get("name"), c.get("push_name")):
                        changed += 1
                        # A saved name is the direct chat's name: its conversation follows.
                        conversations.refresh(db, slot, [jid for jid in (phone, lid) if jid])
            return changed

        return await self._store.call(write)

    async def lookup(self, slot: Slot, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The contacts these ids (phone JIDs or LIDs) name, by id; an unknown id is absent."""
        return await self._store.read(lambda db: find(db, slot, ids))
