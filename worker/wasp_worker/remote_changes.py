"""What WhatsApp says changed in a slot's history, besides new messages and receipts, into
the shard's store: edits, deletes for everyone, reactions, poll votes, history syncs and
the chat settings the account's phone set (`backends.base.RemoteChange`, from either
backend's `on_remote`).

Each stored edit, delete, reaction and vote also goes to the live feed (`emit`):
`wa:message_edited`, `wa:message_deleted`, `wa:reaction`, `wa:poll_vote`, with the data
of its webhook event (`message.edited` has the new body, as its webhook does).

Like inbound messages, a change counts only for a session this worker holds
CONNECTED (after a lost lease another worker owns the slot). A history sync is
written in chunks of `HISTORY_CHUNK` messages, each its own transaction, so the
shard's one database thread is never held long by months of history; the chats'
unread counts and settings go with the last chunk, once all their messages are in.
Logs name slots, chats and message ids, never bodies.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, assert_never

from wasp.slots import Slot
from wasp_worker.backends.base import (
    HistoryImport,
    MessageEdit,
    MessageReaction,
    MessageRevoke,
    PollVote,
    RemoteChange,
    RemoteChatSettings,
)
from wasp_worker.contacts import Contacts
from wasp_worker.conversations import UNSET, Conversations
from wasp_worker.db import SerialDatabase
from wasp_worker.events import EventLog
from wasp_worker.history import History
from wasp_worker.reactions import Reactions
from wasp_worker.sessions import SessionManager

HISTORY_CHUNK = 500


@dataclass
class RemoteChanges:
    store: SerialDatabase
    history: History
    conversations: Conversations
    contacts: Contacts
    sessions: SessionManager
    log: EventLog
    reactions: Reactions | None = None
    emit: Callable[[str, dict[str, Any]], None] | None = None  # the live feed's

    def _live(self, name: str, data: dict[str, Any]) -> None:
        if self.emit is not None:
            self.emit(name, data)

    async def apply(self, change: RemoteChange) -> None:
        """Store one change (the backends' `on_remote`); a failure is logged, not raised:
        the session's other events keep flowing."""
        state = self.sessions.states.get(change.slot)
        if state is None or state.status != "CONNECTED":
            return
        try:
            await self._apply(change)
        except Exception as error:
            self.log.emit(
                "remote_change_failed",
                slot=str(change.slot),
                change=type(change).__name__,
                error=type(error).__name__,
            )

    async def _apply(self, change: RemoteChange) -> None:
        slot = str(change.slot)
        match change:
            case MessageEdit(chat_id=chat, wa_message_id=message_id, body=body, edited_at=at):
                applied = await self.history.edit(change.slot, chat, message_id, body, at)
                self.log.emit(
                    "wa_message_edited", slot=slot, wa_message_id=message_id, applied=applied
                )
                if applied:
                    edited = {"slot": slot, "chat_id": chat, "wa_message_id": message_id}
                    self._live("wa:message_edited", {**edited, "body": body, "edited_at": at})
            case MessageRevoke(chat_id=chat, wa_message_id=message_id, deleted_at=at):
                applied = await self.history.revoke(change.slot, chat, message_id, at)
                self.log.emit(
                    "wa_message_revoked", slot=slot, wa_message_id=message_id, applied=applied
                )
                if applied:
                    deleted = {"slot": slot, "chat_id": chat, "wa_message_id": message_id}
                    self._live("wa:message_deleted", {**deleted, "deleted_at": at})
            case HistoryImport():
                await self._import(change)
            case RemoteChatSettings(chat_id=chat, change=settings):
                applied = await self.conversations.apply_remote(
                    change.slot,
                    chat,
                    pinned=settings.pinned,
                    archived=settings.archived,
                    muted_until=settings.muted_until if settings.mute else UNSET,
                    at=settings.at,
                )
                self.log.emit("wa_chat_settings_seen", slot=slot, chat_id=chat, applied=applied)
            case MessageReaction():
                event = await self.reactions.react(change) if self.reactions else None
                self.log.emit(
                    "wa_reaction",
                    slot=slot,
                    wa_message_id=change.wa_message_id,
                    removed=change.emoji == "",
                    changed=event is not None,
                )
                if event is not None:
                    self._live("wa:reaction", event.data)
            case PollVote():
                event = await self.reactions.vote(change) if self.reactions else None
                self.log.emit(
                    "wa_poll_vote", slot=slot, poll_id=change.poll_id, changed=event is not None
                )
                if event is not None:
                    self._live("wa:poll_vote", event.data)
            case _:
                assert_never(change)

    async def _import(self, change: HistoryImport) -> None:
        # Contacts first: a direct chat's name comes from its contact as it is refreshed.
        if change.contacts:
            await self.contacts.upsert(change.slot, list(change.contacts))
        messages, new = list(change.messages), 0
        chunks = [messages[i : i + HISTORY_CHUNK] for i in range(0, len(messages), HISTORY_CHUNK)]
        for index, chunk in enumerate(chunks or [[]]):
            last = index == len(chunks or [[]]) - 1
            new += await self.history.import_history(
                change.slot, chunk, list(change.chats) if last else []
            )
        kept = 0
        if self.reactions is not None and (change.reactions or change.votes):
            kept = await self.reactions.import_history(change.reactions, change.votes)
        self.log.emit(
            "wa_history_synced",
            slot=str(change.slot),
            messages=len(messages),
            new=new,
            chats=len(change.chats),
            contacts=len(change.contacts),
            reactions_and_votes=kept,
        )

    async def known_chats(self, slot: Slot, limit: int = 2000) -> list[str]:
        """The slot's chats the store has, latest first: whose settings the neonize backend
        reads back from whatsmeow at a connect."""

        def read(db: sqlite3.Connection) -> list[Any]:
            return db.execute(
                "SELECT chat_id FROM conversations WHERE slot=? "
                "ORDER BY coalesce(last_timestamp, 0) DESC LIMIT ?",
                (str(slot), limit),
            ).fetchall()

        return [row[0] for row in await self.store.call(read)]
