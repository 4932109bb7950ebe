"""Retention: the worker deletes the messages past its shard's limits, a batch at a time.

The limits are the shard's `retention` (`wasp.retention`, RETENTION_* variables):
messages older than `maxAgeDays`, and each chat's oldest past its newest
`maxMessagesPerChat`. Both select a prefix of the chat's messages in (timestamp,
id) order, so a chat loses its oldest `max(older than the cutoff, count - limit)`.

A pass walks the conversations in pages by id (each chat's messages by the
`messages_chat` index), and deletes at most RETENTION_BATCH messages per
database call, so the shard's one database thread is never held long and the
other writers get their turns between batches. A batch's media files go first,
then its rows (with their reactions and poll votes), with a `changes` row per
deleted message (incremental sync reports it deleted) and its chats'
conversations refreshed, in one transaction; a crash in between leaves a row
whose file is gone (its media answers 404), which the next pass deletes, never a
file without its row.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from wasp.retention import Retention
from wasp.slots import Slot
from wasp_worker import conversations, media, reactions
from wasp_worker.conversations import log_changes
from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.events import EventLog
from wasp_worker.maintenance import every

CHATS_PER_CALL = 200
DAY_S = 86_400


@dataclass(frozen=True)
class Doomed:
    id: int
    slot: str
    chat_id: str
    wa_message_id: str
    media_name: str | None


def _chat_doomed(
    db: sqlite3.Connection,
    slot: str,
    chat_id: str,
    retention: Retention,
    cutoff: float | None,
    room: int,
) -> tuple[list[Doomed], bool]:
    """Up to `room` of the chat's messages past the limits, oldest first, and whether
    that is all of them."""
    due = 0
    if cutoff is not None:
        due = db.execute(
            "SELECT count(*) FROM messages WHERE slot=? AND chat_id=? AND timestamp < ?",
            (slot, chat_id, cutoff),
        ).fetchone()[0]
    if retention.maxMessagesPerChat is not None:
        total = db.execute(
            "SELECT count(*) FROM messages WHERE slot=? AND chat_id=?", (slot, chat_id)
        ).fetchone()[0]
        due = max(due, total - retention.maxMessagesPerChat)
    if due <= 0:
        return [], True
    rows = db.execute(
        "SELECT id, wa_message_id, media_url FROM messages WHERE slot=? AND chat_id=? "
        "ORDER BY timestamp, id LIMIT ?",
        (slot, chat_id, min(due, room)),
    ).fetchall()
    parsed = Slot.parse(slot)
    found = [
        Doomed(int(row_id), slot, chat_id, message_id, media.stored_name(parsed, url))
        for row_id, message_id, url in rows
    ]
    return found, due <= room


def select(
    db: sqlite3.Connection,
    retention: Retention,
    now: float,
    after: int,
    batch: int,
    chats_per_call: int = CHATS_PER_CALL,
) -> tuple[list[Doomed], int | None]:
    """One batch: the messages past the limits in the conversations after id `after`
    (a page of them at most), and where the next call starts (None: the pass is done)."""
    cutoff = now - retention.maxAgeDays * DAY_S if retention.maxAgeDays is not None else None
    chats = db.execute(
        "SELECT id, slot, chat_id FROM conversations WHERE id > ? ORDER BY id LIMIT ?",
        (after, chats_per_call),
    ).fetchall()
    doomed: list[Doomed] = []
    for conversation_id, slot, chat_id in chats:
        found, whole = _chat_doomed(db, slot, chat_id, retention, cutoff, batch - len(doomed))
        doomed.extend(found)
        if not whole:  # the batch is full: this chat again next call
            return doomed, conversation_id - 1
        if len(doomed) >= batch:
            return doomed, conversation_id
    return doomed, (chats[-1][0] if len(chats) == chats_per_call else None)


def delete(db: sqlite3.Connection, doomed: list[Doomed]) -> int:
    """Delete these messages, log each as changed and refresh their chats, in one
    transaction; how many rows went."""
    by_slot: dict[str, list[Doomed]] = {}
    for item in doomed:
        by_slot.setdefault(item.slot, []).append(item)
    deleted = 0
    with transaction(db):
        for slot_text, items in by_slot.items():
            slot = Slot.parse(slot_text)
            marks = ",".join("?" * len(items))
            gone = db.execute(
                f"DELETE FROM messages WHERE id IN ({marks}) RETURNING wa_message_id, chat_id",
                [item.id for item in items],
            ).fetchall()
            deleted += len(gone)
            log_changes(db, slot, "message", [row[0] for row in gone])
            reactions.forget(db, slot, [row[0] for row in gone])
            chats = list(dict.fromkeys(row[1] for row in gone))
            conversations.refresh(db, slot, chats)
            # A chat left without messages keeps its conversation (its tags, its pin) but
            # no longer names a last message or unread ones.
            emptied = db.execute(
                f"UPDATE conversations SET last_message_id=NULL, unread=0 "
                f"WHERE slot=? AND chat_id IN ({','.join('?' * len(chats))}) "
                "AND (last_message_id IS NOT NULL OR unread != 0) "
                "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.slot=conversations.slot "
                "AND m.chat_id=conversations.chat_id) RETURNING chat_id",
                (slot_text, *chats),
            ).fetchall()
            log_changes(db, slot, "conversation", [row[0] for row in emptied])
    return deleted


@dataclass
class Pruner:
    """Prunes the shard's database by its retention, now (`prune`) or every interval (`run`)."""

    store: SerialDatabase
    work_dir: Path
    retention: Retention
    log: EventLog
    batch: int = 500
    chats_per_call: int = CHATS_PER_CALL
    now: Callable[[], float] = time.time

    @property
    def enabled(self) -> bool:
        return (
            self.retention.maxAgeDays is not None or self.retention.maxMessagesPerChat is not None
        )

    async def prune(self) -> int:
        """One pass over every conversation; the number of messages deleted."""
        if not self.enabled:
            return 0
        now, after, total = self.now(), 0, 0
        started = time.monotonic()
        next_after: int | None = 0
        while next_after is not None:
            after = next_after
            doomed, next_after = await self.store.call(
                partial(
                    select,
                    retention=self.retention,
                    now=now,
                    after=after,
                    batch=self.batch,
                    chats_per_call=self.chats_per_call,
                )
            )
            if not doomed:
                continue
            await asyncio.to_thread(self._remove_media, doomed)
            total += await self.store.call(partial(delete, doomed=doomed))
        self.log.emit(
            "retention_pass",
            deleted=total,
            maxAgeDays=self.retention.maxAgeDays,
            maxMessagesPerChat=self.retention.maxMessagesPerChat,
            seconds=round(time.monotonic() - started, 3),
        )
        return total

    def _remove_media(self, doomed: list[Doomed]) -> None:
        names: dict[str, list[str]] = {}
        for item in doomed:
            if item.media_name is not None:
                names.setdefault(item.slot, []).append(item.media_name)
        for slot, found in names.items():
            media.remove(self.work_dir, Slot.parse(slot), found)

    async def run(self, interval_s: float, active: Callable[[], bool]) -> None:
        """A pass every `interval_s` while the shard's lease is held (`maintenance.every`);
        nothing when no limit is set."""
        if not self.enabled:
            return
        await every(interval_s, active, self.prune, self.log, "retention_failed")
