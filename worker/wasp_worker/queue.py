"""The durable outbound queue of one shard: SQLite in WAL mode on the shard's volume.

A message is accepted only once its row is committed (synchronous=FULL), so
an answer of 202 means it is on disk. Each row ends `sent` or `failed` with a
reason (receipts later move a sent one on: `delivered`, `read`, `played`). An
idempotency key per slot makes a retried request return the first row instead
of adding another. Every row has a WhatsApp message id fixed at enqueue time,
so a send repeated after a crash is the same message, which the simulator
deduplicates. neonize cannot send under a chosen id: whatsmeow names the message,
and `finish` gives the row that name (receipts, replies and reactions use it); a
send cut off between WhatsApp's acceptance and that commit may go twice, which
the shutdown grace for sends in flight keeps rare. A transient failure leaves
the row queued with its `attempts`, its last `reason` and a `not_before` for the
next try.

Group commit: enqueues that arrive while a transaction is being written wait
and then share the next one (one `BEGIN IMMEDIATE ... COMMIT`, one fsync), and
each caller is answered only once that transaction is committed. A request that
fails inside the batch is rolled back to its own savepoint; the others commit.

Every change a webhook reports commits with its `message.status` outbox event:
enqueue (`queued`, inside each request's savepoint of the batch), `finish`
(`sent` and the history's copy of the message, or `failed` with its reason)
and `receipt` (`delivered`, `read`, `played`, for queue rows and for what the
account sent from its phone, which only the history has). The queue, the
history and the outbox are tables of the shard's one database
(`wasp_worker.store`), so each of these is one transaction.

SQLite is blocking: every call runs on the database's own thread (`db.py`),
never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from wasp import webhooks
from wasp.messages import MediaMessage, Message, normalise
from wasp.pacing import PacingOverride
from wasp.slots import Slot
from wasp_worker import history, media, outgoing_media, reactions, store_v10
from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.errors import NotFound
from wasp_worker.outgoing_media import Upload
from wasp_worker.outgoing_payload import content, history_payload
from wasp_worker.webhooks import outbox as outbox_tables
from wasp_worker.webhooks.outbox import Outbox
from wasp_worker.webhooks.source import WebhookEvents

# Version 0: the first queue. Migrations below take it on; a new file takes the same path.
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

STATES = ("queued", "sent", "failed", "delivered", "read", "played")
RECEIPT_ORDER = ("sent", "delivered", "read", "played")
_STATE_CHECK = ", ".join(f"'{state}'" for state in STATES)
_V0_COLUMNS = (
    "id, slot, idempotency_key, wa_message_id, destination, kind, body, media_url, "
    "file_name, state, reason, not_before, created, finished"
)

MIGRATIONS = (
    # 1: retries (attempts, first failure) and receipt states. SQLite cannot change a CHECK
    # in place: the table is rebuilt, every row and the id sequence carried over (ids name
    # WhatsApp message ids: one must never be handed out twice).
    f"""
    CREATE TABLE outbound_v1 (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      slot TEXT NOT NULL,
      idempotency_key TEXT,
      wa_message_id TEXT NOT NULL,
      destination TEXT NOT NULL,
      kind TEXT NOT NULL,
      body TEXT,
      media_url TEXT,
      file_name TEXT,
      state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ({_STATE_CHECK})),
      reason TEXT,
      not_before REAL NOT NULL,
      created REAL NOT NULL,
      finished REAL,
      attempts INTEGER NOT NULL DEFAULT 0,
      first_failed REAL,
      UNIQUE (slot, idempotency_key)
    );
    INSERT INTO outbound_v1 ({_V0_COLUMNS}) SELECT {_V0_COLUMNS} FROM outbound ORDER BY id;
    DELETE FROM sqlite_sequence WHERE name = 'outbound_v1';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'outbound_v1', seq FROM sqlite_sequence
      WHERE name = 'outbound';
    DROP TABLE outbound;
    ALTER TABLE outbound_v1 RENAME TO outbound;
    CREATE INDEX outbound_due ON outbound (state, slot, not_before, id);
    CREATE INDEX outbound_chat ON outbound (state, slot, destination, id);
    CREATE TABLE pacing (slot TEXT PRIMARY KEY, rules TEXT NOT NULL)
    """,
    # 2: a receipt that came back while its send was still being committed (the device
    # can answer before the send call returns): kept, and applied by `finish`.
    "ALTER TABLE outbound ADD COLUMN early_receipt TEXT",
)


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
    attempts: int = 0
    not_before: float = 0.0
    created: float = 0.0
    first_failed: float | None = None
    # JSON of what the message says beyond `body` and `media_url` (`store_v9`); None: nothing.
    payload: str | None = None

    @property
    def details(self) -> dict[str, Any]:
        """The payload as a dict ({} for a plain text or media-from-URL message)."""
        return json.loads(self.payload) if self.payload else {}

    def status(self, state: str, reason: str | None = None) -> dict[str, Any]:
        """The message in a state: a `wa:message_status` live event's and a
        `message.status` webhook's data (ids only, never the body)."""
        return {
            "slot": self.slot,
            "id": self.id,
            "waMessageId": self.wa_message_id,
            "to": self.destination,
            "state": state,
            "reason": reason,
        }

    def status_event(self, state: str, reason: str | None = None) -> webhooks.Event:
        return WebhookEvents.from_message_status(
            self.slot, self.status(state, reason), state, reason
        )

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
            "attempts": self.attempts,
        }


_COLUMNS = (
    "id, slot, wa_message_id, destination, kind, body, media_url, file_name, state, reason, "
    "attempts, not_before, created, first_failed, payload"
)


ActionKind = Literal["reaction", "edit", "delete", "vote"]
ACTION_KINDS: frozenset[str] = frozenset({"reaction", "edit", "delete", "vote"})


@dataclass(frozen=True)
class Action:
    """An action on a message of the slot's store, as the queue takes it: its row's
    destination is the chat (so it keeps its place in the chat's lane) and its payload
    `details`: {chat, target, emoji | text | options, target_from_me, target_sender, me}."""

    kind: ActionKind
    chat_id: str
    idempotency_key: str | None
    details: dict[str, Any]


@dataclass
class _Pending:
    slot: Slot
    request: Message | Action
    answer: asyncio.Future[tuple[Outbound, bool]]
    upload: Upload | None = None


@dataclass
class CommitStats:
    """How enqueues were grouped: requests answered, transactions committed, largest batch."""

    requests: int = 0
    commits: int = 0
    largest: int = 0


class OutboundQueue:
    def __init__(self, store: SerialDatabase, outbox: Outbox) -> None:
        self._store = store
        self._db = store.db
        self._outbox = outbox
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.stats = CommitStats()
        # The live feed's: a sent action's change to the store, as a received one is shown.
        self.emit: Callable[[str, dict[str, Any]], None] | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await self._store.call(lambda _: fn(*args))

    async def enqueue(
        self, slot: Slot, request: Message | Action, upload: Upload | None = None
    ) -> tuple[Outbound, bool]:
        """Store the message or action (and `upload`, its file's checked bytes); returns
        (row, created) once it is committed. A known idempotency key returns its row. A
        `reply_to` the store has no message of in that chat is NotFound. Concurrent calls
        share one transaction."""
        answer: asyncio.Future[tuple[Outbound, bool]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(slot, request, answer, upload))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return await answer

    async def _write_pending(self) -> None:
        """Write what waits, in one transaction; whatever arrived meanwhile goes in the next."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._store.call(partial(self._write_batch, batch))
            except Exception as error:  # the transaction failed: nobody's row is on disk
                for pending in batch:
                    if not pending.answer.done():
                        pending.answer.set_exception(error)
                continue
            except BaseException:
                for pending in batch:
                    pending.answer.cancel()
                raise
            self._outbox.added()
            for pending, result in zip(batch, results, strict=True):
                if pending.answer.done():  # the caller went away; its row stays accepted
                    continue
                if isinstance(result, Exception):
                    pending.answer.set_exception(result)
                else:
                    pending.answer.set_result(result)

    def _write_batch(
        self, batch: list[_Pending], db: sqlite3.Connection
    ) -> list[tuple[Outbound, bool] | Exception]:
        """On the database thread: every request of the batch in one committed transaction,
        each under its own savepoint so that one's failure leaves the others in."""
        results: list[tuple[Outbound, bool] | Exception] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for pending in batch:
                db.execute("SAVEPOINT request")
                try:
                    if isinstance(pending.request, Action):
                        results.append(self._insert_action(pending.slot, pending.request))
                    else:
                        results.append(self._insert(pending.slot, pending.request, pending.upload))
                except Exception as error:
                    db.execute("ROLLBACK TO request")
                    results.append(error)
                db.execute("RELEASE request")
            self._commit(db)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.stats.requests += len(batch)
        self.stats.commits += 1
        self.stats.largest = max(self.stats.largest, len(batch))
        return results

    @staticmethod
    def _commit(db: sqlite3.Connection) -> None:
        db.execute("COMMIT")

    def _insert(
        self, slot: Slot, request: Message, upload: Upload | None = None
    ) -> tuple[Outbound, bool]:
        db = self._db
        sent_media = request if isinstance(request, MediaMessage) else None
        if request.idempotency_key is not None:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE slot=? AND idempotency_key=?",
                (str(slot), request.idempotency_key),
            ).fetchone()
            if found:
                return Outbound(*found), False
        # A LID the map does not know yet stays a LID: the sending engine asks the
        # session's own store when its turn comes (`phone_for`, then the backend).
        destination, state, reason = normalise(request.to), "queued", None
        destination = self._phone_for(slot, destination) or destination
        details = content(request)
        if request.reply_to is not None:
            details.update(self._quoted(slot, destination, request.reply_to))
        if upload is not None:
            # On disk (fsynced) before the row naming it commits: a crash in between leaves
            # a file no row names, never a row without its file.
            outgoing_media.write(self._work_dir(), upload)
            details.update(file=upload.sha256, mime=upload.mime, file_size=upload.size)
        now = time.time()
        cursor = db.execute(
            "INSERT INTO outbound (slot, idempotency_key, wa_message_id, destination, kind, "
            "body, media_url, file_name, state, reason, not_before, created, finished, payload) "
            "VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(slot),
                request.idempotency_key,
                destination,
                request.type,
                request.body,
                sent_media.media_url if sent_media else None,
                sent_media.file_name if sent_media else None,
                state,
                reason,
                request.send_at or now,
                now,
                now if state == "failed" else None,
                json.dumps(details, separators=(",", ":")) if details else None,
            ),
        )
        row = int(cursor.lastrowid or 0)
        db.execute("UPDATE outbound SET wa_message_id=? WHERE id=?", (message_id(slot, row), row))
        stored = self._get(row)
        outbox_tables.add(db, [stored.status_event("queued")])
        return stored, True

    def _quoted(self, slot: Slot, chat_id: str, wa_message_id: str) -> dict[str, Any]:
        """What a backend needs to quote a message of the chat (its sender, a copy of its
        text and type); NotFound when the slot's store has no such message there."""
        found = self._db.execute(
            "SELECT from_me, coalesce(sender_phone_jid, sender_jid), body, message_type "
            "FROM messages WHERE slot=? AND chat_id=? AND wa_message_id=?",
            (str(slot), chat_id, wa_message_id),
        ).fetchone()
        if found is None:
            raise NotFound(f"reply_to: no message {wa_message_id} in {chat_id}")
        from_me, sender, body, kind = found
        return {
            "reply_to": wa_message_id,
            "quoted_from_me": bool(from_me),
            "quoted_sender": None if from_me else (sender or chat_id),
            "quoted_body": body or "",
            "quoted_type": kind or "text",
        }

    def _work_dir(self) -> Path:
        """The volume's folder: the one the shard's database file is in."""
        return Path(self._db.execute("PRAGMA database_list").fetchone()[2]).parent

    def _keep_media(self, sent: Outbound) -> str | None:
        """The account's own copy of a file it sent, among the slot's media (a hard link to
        the upload: same volume, no copy); its `media_url`, None without a file."""
        name = sent.details.get("file")
        if not name:
            return None
        work_dir, slot = self._work_dir(), Slot.parse(sent.slot)
        kept = media.file_name(sent.wa_message_id, sent.details.get("mime"))
        target = media.media_dir(work_dir, slot) / kept
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(outgoing_media.path(work_dir, name), target)
        except FileExistsError:  # sent before a crash, linked then: the same bytes
            pass
        except FileNotFoundError:
            return None
        return f"/api/accounts/{slot}/media/{kept}"

    def _release_file(self, ended: Outbound) -> None:
        """Remove an ended row's uploaded file once no queued row names it (the same bytes
        may be queued again by another message)."""
        name = ended.details.get("file")
        if not name:
            return
        still = self._db.execute(
            "SELECT 1 FROM outbound WHERE state='queued' AND json_extract(payload, '$.file')=? "
            "LIMIT 1",
            (name,),
        ).fetchone()
        if still is None:
            outgoing_media.remove(self._work_dir(), name)

    def _phone_for(self, slot: Slot, jid: str) -> str | None:
        """The phone JID the map has for a LID (None for another JID, or an unknown LID)."""
        if not jid.endswith("@lid"):
            return None
        found = self._db.execute(
            "SELECT phone_jid FROM lid_map WHERE slot=? AND lid=?", (str(slot), jid)
        ).fetchone()
        return str(found[0]) if found else None

    async def phone_for(self, slot: Slot, lid: str) -> str | None:
        return await self._run(self._phone_for, slot, lid)  # type: ignore[no-any-return]

    async def readdress(self, row: int, destination: str) -> None:
        """A LID resolved at send time: the row names the phone JID it went to."""
        await self._run(
            lambda: self._db.execute(
                "UPDATE outbound SET destination=? WHERE id=? AND state='queued'",
                (destination, row),
            )
        )

    async def receipt(
        self, slot: Slot, message_ids: list[str], state: str, chat_id: str
    ) -> list[dict[str, Any]]:
        """Move sent messages forward to a receipt's `state` (sent -> delivered -> read ->
        played, never back): the queue's rows and the history's copies, and what the account
        sent from its phone (only in the history, reported with no row `id`, `to` the
        chat). One transaction with a `message.status` event per message that moved; those
        events' data, in the receipt's order."""
        earlier = RECEIPT_ORDER[: RECEIPT_ORDER.index(state)]
        marks, states = ",".join("?" * len(message_ids)), ",".join("?" * len(earlier))

        def write(db: sqlite3.Connection) -> list[dict[str, Any]]:
            with transaction(db):
                rows = {
                    moved.wa_message_id: moved
                    for moved in (
                        Outbound(*found)
                        for found in db.execute(
                            f"UPDATE outbound SET state=? WHERE slot=? "
                            f"AND wa_message_id IN ({marks}) AND state IN ({states}) "
                            f"RETURNING {_COLUMNS}",
                            (state, str(slot), *message_ids, *earlier),
                        ).fetchall()
                    )
                }
                # Still being sent (its send call has not returned): `finish` applies it.
                db.execute(
                    f"UPDATE outbound SET early_receipt=? WHERE slot=? AND state='queued' "
                    f"AND wa_message_id IN ({marks}) "
                    f"AND (early_receipt IS NULL OR early_receipt IN ({states}))",
                    (state, str(slot), *message_ids, *earlier),
                )
                moved = set(rows) | set(history.move(db, slot, message_ids, state))
                _keep_unmatched(db, slot, message_ids, state)
                events = []
                for wa_message_id in sorted(moved, key=message_ids.index):
                    row = rows.get(wa_message_id)
                    events.append(
                        row.status_event(state)
                        if row is not None
                        else WebhookEvents.from_message_status(
                            str(slot),
                            {
                                "slot": str(slot),
                                "id": None,
                                "waMessageId": wa_message_id,
                                "to": chat_id,
                            },
                            state,
                        )
                    )
                outbox_tables.add(db, events)
            return [event.data for event in events]

        statuses: list[dict[str, Any]] = await self._store.call(write)
        if statuses:
            self._outbox.added()
        return statuses

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

    async def due_slots(self, slots: list[str], now: float) -> list[str]:
        """Those of `slots` with a queued message whose time has come."""
        if not slots:
            return []

        def read() -> list[str]:
            marks = ",".join("?" * len(slots))
            rows = self._db.execute(
                f"SELECT DISTINCT slot FROM outbound WHERE state='queued' AND slot IN ({marks}) "
                "AND not_before<=?",
                (*slots, now),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._run(read)  # type: ignore[no-any-return]

    async def heads(self, slot: str, now: float, limit: int = 200) -> list[Outbound]:
        """The next message of each of the slot's chats, oldest first: the oldest queued
        one that is due or already tried (a message waiting to be retried keeps the later
        ones of its chat behind it; one scheduled for later does not)."""

        def read() -> list[Outbound]:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE id IN ("
                "SELECT min(id) FROM outbound WHERE state='queued' AND slot=? "
                "AND (not_before<=? OR attempts>0) GROUP BY destination) ORDER BY id LIMIT ?",
                (slot, now, limit),
            ).fetchall()
            return [Outbound(*r) for r in rows]

        return await self._run(read)  # type: ignore[no-any-return]

    async def finish(
        self,
        row: int,
        state: Literal["sent", "failed"],
        reason: str | None,
        sent_as: str | None = None,
    ) -> str:
        """End a queued message; the state it ends in: a sent one whose receipt came
        back meanwhile ends in the receipt's state. One transaction with its
        `message.status` events (`sent` and then that receipt's, or `failed`) and, when
        sent, the history's copy of the message. `sent_as`: the id WhatsApp gave the
        message when the backend could not send it under the row's own; the row, its
        events and the history take it, since receipts, replies and reactions name it."""

        def write(db: sqlite3.Connection) -> str:
            with transaction(db):
                if state == "sent" and sent_as:
                    # A receipt WhatsApp sent for that id before the send call returned
                    # waited for it (`_keep_unmatched`): the row takes it now.
                    waited = db.execute(
                        "DELETE FROM unmatched_receipts WHERE slot=(SELECT slot FROM outbound "
                        "WHERE id=?) AND wa_message_id=? RETURNING state",
                        (row, sent_as),
                    ).fetchone()
                    db.execute(
                        "UPDATE outbound SET wa_message_id=?, early_receipt=coalesce(?, "
                        "early_receipt) WHERE id=? AND state='queued'",
                        (sent_as, waited[0] if waited else None, row),
                    )
                found = db.execute(
                    "UPDATE outbound SET state=CASE WHEN ?='sent' "
                    "THEN coalesce(early_receipt, 'sent') ELSE ? END, reason=?, finished=? "
                    f"WHERE id=? AND state='queued' RETURNING {_COLUMNS}",
                    (state, state, reason, time.time(), row),
                ).fetchone()
                if found is None:  # ended already: nothing changed, nothing to report
                    return state
                ended = Outbound(*found)
                slot = Slot.parse(ended.slot)
                if state == "failed":
                    _report_failed(db, [ended], reason)
                elif ended.kind in ACTION_KINDS:  # no message of its own: it changes its target
                    outbox_tables.add(db, [ended.status_event("sent")])
                    applied.append(_apply_action(db, slot, ended))
                else:
                    history.insert(db, slot, "out", _sent(ended, self._keep_media(ended)))
                    events = [ended.status_event("sent")]
                    if ended.state != "sent":  # its receipt came back before the send returned
                        history.move(db, slot, [ended.wa_message_id], ended.state)
                        events.append(ended.status_event(ended.state))
                    outbox_tables.add(db, events)
            # After the commit, on the database's thread (as `_insert` writes files): a
            # file is gone only once no queued row names it.
            self._release_file(ended)
            return ended.state

        applied: list[Applied] = []
        final: str = await self._store.call(write)
        self._outbox.added()
        for change in applied:  # once committed: the live event, a deleted message's media
            if change.live is not None and self.emit is not None:
                self.emit(*change.live)
            if change.media is not None:
                await asyncio.to_thread(change.media.unlink, missing_ok=True)
        return final

    def fail_queued(self, db: sqlite3.Connection, slot: Slot, reason: str) -> list[Outbound]:
        """Inside the caller's transaction, on the database's thread: end every queued row
        of the slot `failed` with `reason`, each with its `message.status` event, as
        `finish` fails one. After the commit the caller calls `release_files` (on this
        thread) and `Outbox.added` (on the loop)."""
        found = db.execute(
            "UPDATE outbound SET state='failed', reason=?, finished=? "
            f"WHERE slot=? AND state='queued' RETURNING {_COLUMNS}",
            (reason, time.time(), str(slot)),
        ).fetchall()
        ended = sorted((Outbound(*row) for row in found), key=lambda o: o.id)
        _report_failed(db, ended, reason)
        return ended

    def release_files(self, ended: list[Outbound]) -> None:
        """After `fail_queued`'s commit, on the database's thread: their uploaded files
        go, as `finish` releases an ended row's."""
        for row in ended:
            self._release_file(row)

    async def retry(
        self, row: int, attempts: int, not_before: float, reason: str, failed_at: float
    ) -> None:
        """A transient failure at `failed_at`: the message stays queued, to be tried again
        from `not_before`; the first failure's time is kept (a message's age in retries)."""
        await self._run(
            lambda: self._db.execute(
                "UPDATE outbound SET attempts=?, not_before=?, reason=?, "
                "first_failed=coalesce(first_failed, ?) WHERE id=? AND state='queued'",
                (attempts, not_before, reason, failed_at, row),
            )
        )

    async def depth(self) -> int:
        return await self._run(  # type: ignore[no-any-return]
            lambda: self._db.execute(
                "SELECT count(*) FROM outbound WHERE state='queued'"
            ).fetchone()[0]
        )

    def pacing_overrides(self) -> dict[str, PacingOverride]:
        """Every account's own pacing, by slot (blocking: read once, before serving)."""

        def read(db: sqlite3.Connection) -> dict[str, PacingOverride]:
            rows = db.execute("SELECT slot, rules FROM pacing").fetchall()
            return {str(slot): PacingOverride.model_validate_json(rules) for slot, rules in rows}

        return self._store.call_blocking(read)

    async def set_pacing(self, slot: Slot, override: PacingOverride | None) -> None:
        """Store one account's own pacing; None (or one that sets nothing) clears it."""
        if override is not None and not override.model_dump(exclude_none=True):
            override = None

        def write() -> None:
            if override is None:
                self._db.execute("DELETE FROM pacing WHERE slot=?", (str(slot),))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO pacing VALUES (?, ?)",
                    (str(slot), override.model_dump_json(exclude_none=True)),
                )

        await self._run(write)

    async def enqueue_action(self, slot: Slot, action: Action) -> tuple[Outbound, bool]:
        """Store an action on a message (`Action`) as a queue row, in the same group commit
        as sends: (row, created). A known idempotency key returns its row; so does a
        second delete of the same message (the first one's, unless that one failed)."""
        return await self.enqueue(slot, action)

    async def by_key(self, slot: Slot, key: str) -> Outbound | None:
        """The slot's row of an idempotency key, if any."""

        def read(db: sqlite3.Connection) -> Outbound | None:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE slot=? AND idempotency_key=?",
                (str(slot), key),
            ).fetchone()
            return Outbound(*found) if found else None

        found: Outbound | None = await self._store.call(read)
        return found

    def _insert_action(self, slot: Slot, action: Action) -> tuple[Outbound, bool]:
        db = self._db
        found = None
        if action.idempotency_key is not None:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE slot=? AND idempotency_key=?",
                (str(slot), action.idempotency_key),
            ).fetchone()
        if found is None and action.kind == "delete":
            found = db.execute(
                f"SELECT {_COLUMNS} FROM outbound WHERE slot=? AND kind='delete' "
                "AND json_extract(payload, '$.chat')=? AND state!='failed' "
                "AND json_extract(payload, '$.target')=? ORDER BY id LIMIT 1",
                (str(slot), action.chat_id, action.details["target"]),
            ).fetchone()
        if found:
            return Outbound(*found), False
        now = time.time()
        # The lane of the chat's messages: a LID the map knows goes as its phone JID, as a
        # send to it does (`details["chat"]` keeps the store's name of the chat).
        destination = self._phone_for(slot, action.chat_id) or action.chat_id
        cursor = db.execute(
            "INSERT INTO outbound (slot, idempotency_key, wa_message_id, destination, kind, "
            "state, not_before, created, payload) VALUES (?, ?, '', ?, ?, 'queued', ?, ?, ?)",
            (
                str(slot),
                action.idempotency_key,
                destination,
                action.kind,
                now,
                now,
                json.dumps(action.details, ensure_ascii=False),
            ),
        )
        row = int(cursor.lastrowid or 0)
        db.execute("UPDATE outbound SET wa_message_id=? WHERE id=?", (message_id(slot, row), row))
        stored = self._get(row)
        outbox_tables.add(db, [stored.status_event("queued")])
        return stored, True


@dataclass(frozen=True)
class Applied:
    """What a sent action changed, to show once committed: its live event (name, data) and
    the media file of a message it deleted."""

    live: tuple[str, dict[str, Any]] | None = None
    media: Path | None = None


def _apply_action(db: sqlite3.Connection, slot: Slot, action: Outbound) -> Applied:
    """A sent action applied to the store in the caller's transaction, as the same change
    received from WhatsApp would be, with its webhook event (the account itself is the
    reactor or voter)."""
    details, at = action.details, time.time()
    chat = str(details.get("chat") or action.destination)  # as the store names it
    target, me = str(details["target"]), str(details["me"])
    message = {"slot": str(slot), "chat_id": chat, "wa_message_id": target}
    match action.kind:
        case "reaction" | "vote":
            event = (
                reactions.apply_reaction(db, slot, chat, target, me, details["emoji"], True, at)
                if action.kind == "reaction"
                else reactions.apply_vote(db, slot, chat, target, me, details["options"], at)
            )
            if event is None:
                return Applied()
            outbox_tables.add(db, [event])
            name = "wa:reaction" if action.kind == "reaction" else "wa:poll_vote"
            return Applied((name, event.data))
        case "edit":
            _, changed = history.apply_edit(db, slot, chat, target, details["text"], at)
            live = {**message, "body": details["text"], "edited_at": at}
            return Applied(("wa:message_edited", live) if changed else None)
        case "delete":
            _, changed, media = history.apply_revoke(db, slot, chat, target, at)
            live = {**message, "deleted_at": at}
            return Applied(("wa:message_deleted", live) if changed else None, media)
    return Applied()


def _keep_unmatched(db: sqlite3.Connection, slot: Slot, message_ids: list[str], state: str) -> None:
    """Receipts for ids that neither a row nor a stored message has: kept (the furthest
    state per id) for the row that will take the id when its send call returns; those
    older than `store_v10.KEPT_S` go."""
    marks = ",".join("?" * len(message_ids))
    known = {
        found[0]
        for found in db.execute(
            f"SELECT wa_message_id FROM outbound WHERE slot=? AND wa_message_id IN ({marks}) "
            f"UNION SELECT wa_message_id FROM messages WHERE slot=? AND wa_message_id IN ({marks})",
            (str(slot), *message_ids, str(slot), *message_ids),
        )
    }
    now = time.time()
    db.execute("DELETE FROM unmatched_receipts WHERE at<?", (now - store_v10.KEPT_S,))
    rank = RECEIPT_ORDER.index(state)
    for wa_message_id in message_ids:
        if wa_message_id in known:
            continue
        kept = db.execute(
            "SELECT state FROM unmatched_receipts WHERE slot=? AND wa_message_id=?",
            (str(slot), wa_message_id),
        ).fetchone()
        if kept is None or RECEIPT_ORDER.index(kept[0]) < rank:
            db.execute(
                "INSERT OR REPLACE INTO unmatched_receipts VALUES (?, ?, ?, ?)",
                (str(slot), wa_message_id, state, now),
            )


def _report_failed(db: sqlite3.Connection, ended: list[Outbound], reason: str | None) -> None:
    """The `message.status` webhook events of rows that ended failed, in their transaction."""
    outbox_tables.add(db, [row.status_event("failed", reason) for row in ended])


def _sent(message: Outbound, media_url: str | None = None) -> dict[str, Any]:
    """A sent message in the shape of the history's records: its type, the message it
    quotes, the content the history keeps as `payload` and (`media_url`) its own copy of
    an uploaded file."""
    details = message.details
    kept = history_payload(details)
    return {
        "wa_message_id": message.wa_message_id,
        "chat_id": message.destination,
        "from": message.slot,
        "body": message.body,
        "media_url": media_url or message.media_url,
        "media_type": message.kind if message.kind in outgoing_media.LIMITS else None,
        "message_type": message.kind,
        "mime_type": details.get("mime"),
        "file_size": details.get("file_size"),
        "file_name": message.file_name,
        "quoted_id": details.get("reply_to"),
        "payload": json.dumps(kept, separators=(",", ":")) if kept else None,
        **kept,
    }
