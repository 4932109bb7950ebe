"""The durable outbound queue of one shard: SQLite in WAL mode on the shard's volume.

A message is accepted only once its row is committed (synchronous=FULL), so
an answer of 202 means it is on disk. Each row ends `sent` or `failed` with a
reason. An idempotency key per slot makes a retried request return the first
row instead of adding another. Every row has a WhatsApp message id fixed at
enqueue time, so a send repeated after a crash is the same message, which
WhatsApp (and the simulator) deduplicate.

SQLite is blocking: every call runs on the database's own thread (`db.py`),
never on the event loop.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wasp.messages import MediaMessage, Message, normalise
from wasp.slots import Slot
from wasp_worker.db import SerialDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbound (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  slot TEXT NOT NULL,
  idempotency_key TEXT,
  wa_message_id TEXT NOT NULL,
  destination TEXT NOT NULL,
  kind TEXT NOT NULL,
  body TEXT,
  media_url TEXT,
  file_name TEXT,
  state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
  reason TEXT,
  not_before REAL NOT NULL,
  created REAL NOT NULL,
  finished REAL,
  UNIQUE (slot, idempotency_key)
);
CREATE INDEX IF NOT EXISTS outbound_due ON outbound (state, slot, not_before, id);
CREATE TABLE IF NOT EXISTS lid_map (
  slot TEXT NOT NULL, lid TEXT NOT NULL, phone_jid TEXT NOT NULL, PRIMARY KEY (slot, lid)
);
"""


def message_id(slot: Slot, row: int) -> str:
    """A WhatsApp-style message id fixed per queue row (3EB0 + 16 hex digits)."""
    return "3EB0" + hashlib.sha256(f"{slot}:{row}".encode()).hexdigest()[:16].upper()


@dataclass(frozen=True)
class Outbound:
    id: int
    slot: str
    wa_message_id: str
    destination: str
    kind: str
    body: str | None
    media_url: str | None
    file_name: str | None
    state: str
    reason: str | None

    def public(self) -> dict[str, Any]:
        """What the API answers: no message body (it is the client's own anyway)."""
        return {
            "id": self.id,
            "slot": self.slot,
            "waMessageId": self.wa_message_id,
            "to": self.destination,
            "type": self.kind,
            "state": self.state,
            "reason": self.reason,
        }


_COLUMNS = "id, slot, wa_message_id, destination, kind, body, media_url, file_name, state, reason"


class OutboundQueue:
    def __init__(self, path: Path) -> None:
        self._store = SerialDatabase(path, SCHEMA, "queue")
        self._db = self._store.db

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await self._store.call(lambda _: fn(*args))

    async def enqueue(self, slot: Slot, request: Message) -> tuple[Outbound, bool]:
        """Store the message; returns (row, created). A known idempotency key returns its row."""
        return await self._run(self._enqueue, slot, request)  # type: ignore[no-any-return]

    def _enqueue(self, slot: Slot, request: Message) -> tuple[Outbound, bool]:
        db = self._db
        media = request if isinstance(request, MediaMessage) else None
        if request.idempotency_key is not None:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE slot=? AND idempotency_key=?",
                (str(slot), request.idempotency_key),
            ).fetchone()
            if found:
                return Outbound(*found), False
        destination, state, reason = request.to, "queued", None
        try:
            destination = self._resolve(slot, normalise(request.to))
        except LookupError:
            state, reason = "failed", "lid_without_mapping"
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute(
                "INSERT INTO outbound (slot, idempotency_key, wa_message_id, destination, kind, "
                "body, media_url, file_name, state, reason, not_before, created, finished) "
                "VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(slot),
                    request.idempotency_key,
                    destination,
                    request.type,
                    request.text,
                    media.media_url if media else None,
                    media.file_name if media else None,
                    state,
                    reason,
                    request.send_at or now,
                    now,
                    now if state == "failed" else None,
                ),
            )
            row = int(cursor.lastrowid or 0)
            db.execute(
                "UPDATE outbound SET wa_message_id=? WHERE id=?", (message_id(slot, row), row)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self._get(row), True

    def _resolve(self, slot: Slot, jid: str) -> str:
        if not jid.endswith("@lid"):
            return jid
        found = self._db.execute(
            "SELECT phone_jid FROM lid_map WHERE slot=? AND lid=?", (str(slot), jid)
        ).fetchone()
        if found is None:
            raise LookupError(jid)
        return str(found[0])

    async def map_lid(self, slot: Slot, lid: str, phone_jid: str) -> None:
        await self._run(
            lambda: self._db.execute(
                "INSERT OR REPLACE INTO lid_map VALUES (?, ?, ?)", (str(slot), lid, phone_jid)
            )
        )

    def _get(self, row: int) -> Outbound:
        found = self._db.execute(f"SELECT {_COLUMNS} FROM outbound WHERE id=?", (row,)).fetchone()
        return Outbound(*found)

    async def get(self, row: int) -> Outbound | None:
        def read() -> Outbound | None:
            found = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE id=?", (row,)
            ).fetchone()
            return Outbound(*found) if found else None

        return await self._run(read)  # type: ignore[no-any-return]

    async def due(self, slots: list[str], limit: int = 100) -> list[Outbound]:
        """Queued messages of these slots whose time has come, oldest first."""
        if not slots:
            return []

        def read() -> list[Outbound]:
            marks = ",".join("?" * len(slots))
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE state='queued' AND slot IN ({marks}) "
                "AND not_before<=? ORDER BY id LIMIT ?",
                (*slots, time.time(), limit),
            ).fetchall()
            return [Outbound(*r) for r in rows]

        return await self._run(read)  # type: ignore[no-any-return]

    async def finish(self, row: int, state: Literal["sent", "failed"], reason: str | None) -> None:
        await self._run(
            lambda: self._db.execute(
                "UPDATE outbound SET state=?, reason=?, finished=? WHERE id=? AND state='queued'",
                (state, reason, time.time(), row),
            )
        )

    async def depth(self) -> int:
        return await self._run(  # type: ignore[no-any-return]
            lambda: self._db.execute(
                "SELECT count(*) FROM outbound WHERE state='queued'"
            ).fetchone()[0]
        )

    def close(self) -> None:
        self._store.close()
