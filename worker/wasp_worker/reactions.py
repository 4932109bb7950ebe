"""Reactions and poll votes of a slot's messages, in the shard's store.

WhatsApp keeps one reaction per person per message (the latest; an empty emoji
removes it) and one current choice per voter per poll (a new vote replaces the
old one; an empty choice withdraws it). Both arrive from the backends as remote
changes (`MessageReaction`, `PollVote`) and from the queue once the account's
own reaction or vote was sent; either way they are written here, synchronously,
on the caller's `sqlite3.Connection` inside its open transaction, together with
the message's change in the sync sequence (as an edit logs it) and the webhook
event the caller adds to the outbox in that same transaction.

An update older than the one stored (by its WhatsApp timestamp) changes nothing:
WhatsApp can deliver them again or out of order after a reconnect.

Votes may name options by their hash: WhatsApp sends the SHA-256 of each chosen
option's name, and only the poll (stored here, not in the neonize cell) knows the
names. Such an option is `HASH_PREFIX` + the hex digest; `apply_vote` resolves it
against the stored poll's options, and drops the ones no option matches.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from wasp.slots import Slot
from wasp.webhooks import Event
from wasp_worker.backends.base import OPTION_HASH_PREFIX, MessageReaction, PollVote
from wasp_worker.conversations import log_changes
from wasp_worker.db import SerialDatabase, transaction
from wasp_worker.webhooks import outbox as outbox_tables
from wasp_worker.webhooks.outbox import Outbox

HASH_PREFIX = OPTION_HASH_PREFIX


def option_hash(name: str) -> str:
    """How WhatsApp names a poll option in a vote: SHA-256 of its name (UTF-8), hex."""
    return hashlib.sha256(name.encode()).hexdigest()


def _message_row(
    db: sqlite3.Connection, slot: Slot, chat_id: str, wa_message_id: str
) -> tuple[Any, ...] | None:
    """The stored message's (id, payload), or None when the slot has none in that chat."""
    found: tuple[Any, ...] | None = db.execute(
        "SELECT id, payload FROM messages WHERE slot=? AND wa_message_id=? AND chat_id=?",
        (str(slot), wa_message_id, chat_id),
    ).fetchone()
    return found


def _mark_changed(db: sqlite3.Connection, slot: Slot, wa_message_id: str, row: Any) -> None:
    """The message reads differently now: a sync client sees it again. Only a stored one is
    logged (a logged id that is not stored reads as deleted to a sync client)."""
    if row is not None:
        log_changes(db, slot, "message", [wa_message_id])


def apply_reaction(
    db: sqlite3.Connection,
    slot: Slot,
    chat_id: str,
    wa_message_id: str,
    reactor: str,
    emoji: str,
    from_me: bool,
    timestamp: float,
) -> Event | None:
    """Store `reactor`'s reaction to the message ("" removes it), in the caller's open
    transaction: the `message.reaction` event to add to the outbox in that transaction, or
    None when nothing changed (the same emoji again, an older update, removing none). A
    reaction to a message not stored (yet) is kept: history can bring the message later."""
    stored = db.execute(
        "SELECT emoji, timestamp FROM reactions WHERE slot=? AND wa_message_id=? AND reactor=?",
        (str(slot), wa_message_id, reactor),
    ).fetchone()
    if stored is not None and timestamp < stored[1]:
        return None
    if emoji == "":
        if stored is None:
            return None
        db.execute(
            "DELETE FROM reactions WHERE slot=? AND wa_message_id=? AND reactor=?",
            (str(slot), wa_message_id, reactor),
        )
    else:
        if stored is not None and stored[0] == emoji:
            return None
        db.execute(
            "INSERT INTO reactions (slot, chat_id, wa_message_id, reactor, emoji, from_me, "
            "timestamp) VALUES (?,?,?,?,?,?,?) ON CONFLICT (slot, wa_message_id, reactor) "
            "DO UPDATE SET emoji=excluded.emoji, from_me=excluded.from_me, "
            "timestamp=excluded.timestamp, chat_id=excluded.chat_id",
            (str(slot), chat_id, wa_message_id, reactor, emoji, int(from_me), timestamp),
        )
    message = _message_row(db, slot, chat_id, wa_message_id)
    _mark_changed(db, slot, wa_message_id, message)
    data = {
        "slot": str(slot),
        "id": message[0] if message else None,
        "chat_id": chat_id,
        "wa_message_id": wa_message_id,
        "reactor": reactor,
        "emoji": emoji,
        "removed": emoji == "",
        "from_me": from_me,
        "timestamp": timestamp,
    }
    return Event.new("message.reaction", slot, data)


def poll_options(payload: str | None) -> list[str]:
    """The option names of a stored message's payload (none unless it is a poll)."""
    if not payload:
        return []
    poll = json.loads(payload).get("poll") or {}
    return [str(option) for option in poll.get("options") or []]


def resolve_options(options: Iterable[str], names: Sequence[str]) -> list[str]:
    """The chosen options as names: a name stays, a `HASH_PREFIX` hash becomes the name of
    `names` it hashes, or is dropped when none does. In the poll's order, each once."""
    by_hash = {option_hash(name): name for name in names}
    chosen: set[str] = set()
    for option in options:
        if option.startswith(HASH_PREFIX):
            name = by_hash.get(option[len(HASH_PREFIX) :].lower())
            if name is not None:
                chosen.add(name)
        else:
            chosen.add(option)
    ordered = [name for name in names if name in chosen]
    return ordered + sorted(chosen - set(names))


def apply_vote(
    db: sqlite3.Connection,
    slot: Slot,
    chat_id: str,
    poll_id: str,
    voter: str,
    options: Sequence[str],
    timestamp: float,
) -> Event | None:
    """Store `voter`'s current choice in the poll (empty: the vote is withdrawn), in the
    caller's open transaction: the `message.poll_vote` event (with the poll's counts after
    it) to add to the outbox in that transaction, or None when nothing changed (the same
    choice again, an older vote). Options given by hash are resolved against the stored
    poll (`resolve_options`)."""
    message = _message_row(db, slot, chat_id, poll_id)
    names = poll_options(message[1]) if message else []
    chosen = resolve_options(options, names)
    stored = db.execute(
        "SELECT options, timestamp FROM poll_votes WHERE slot=? AND poll_id=? AND voter=?",
        (str(slot), poll_id, voter),
    ).fetchone()
    if stored is not None and (
        timestamp < stored[1] or sorted(json.loads(stored[0])) == sorted(chosen)
    ):
        return None
    if stored is None and not chosen:
        return None
    # A withdrawn vote keeps its row (options []): its timestamp still orders later updates.
    db.execute(
        "INSERT INTO poll_votes (slot, chat_id, poll_id, voter, options, timestamp) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT (slot, poll_id, voter) DO UPDATE SET "
        "options=excluded.options, timestamp=excluded.timestamp, chat_id=excluded.chat_id",
        (str(slot), chat_id, poll_id, voter, json.dumps(chosen), timestamp),
    )
    _mark_changed(db, slot, poll_id, message)
    data = {
        "slot": str(slot),
        "id": message[0] if message else None,
        "chat_id": chat_id,
        "poll_id": poll_id,
        "voter": voter,
        "options": chosen,
        "timestamp": timestamp,
        "votes": votes_of(db, slot, [poll_id]).get(poll_id, {}),
    }
    return Event.new("message.poll_vote", slot, data)


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def forget(db: sqlite3.Connection, slot: Slot, ids: Sequence[str]) -> None:
    """The reactions to and votes in these messages go with them (retention deleted them),
    in the caller's transaction."""
    if ids:
        marks = _marks(ids)
        db.execute(
            f"DELETE FROM reactions WHERE slot=? AND wa_message_id IN ({marks})", (str(slot), *ids)
        )
        db.execute(
            f"DELETE FROM poll_votes WHERE slot=? AND poll_id IN ({marks})", (str(slot), *ids)
        )


def reactions_across(
    db: sqlite3.Connection, messages: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The current reactions to these messages, (slot, WhatsApp id) each, of any slots,
    oldest first: {(slot, id): [{reactor, emoji, from_me, timestamp}]}; a message without
    any is absent. One statement whatever the slots (a search of fifty accounts must not
    cost a lookup per slot): every (slot, id) pair the two IN lists make is one seek of
    the primary key, and each row is kept under its own (slot, id), so a pair nobody
    asked for (ids are an account's own) is never looked at."""
    wanted = set(messages)
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if not wanted:
        return found
    slots = sorted({slot for slot, _ in wanted})
    ids = sorted({message_id for _, message_id in wanted})
    for slot, message_id, reactor, emoji, from_me, timestamp in db.execute(
        "SELECT slot, wa_message_id, reactor, emoji, from_me, timestamp FROM reactions "
        f"WHERE slot IN ({_marks(slots)}) AND wa_message_id IN ({_marks(ids)}) "
        "ORDER BY timestamp, reactor",
        (*slots, *ids),
    ):
        found.setdefault((slot, message_id), []).append(
            {"reactor": reactor, "emoji": emoji, "from_me": bool(from_me), "timestamp": timestamp}
        )
    return found


def reactions_of(
    db: sqlite3.Connection, slot: Slot, ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """`reactions_across` for one slot's messages, by WhatsApp id."""
    found = reactions_across(db, [(str(slot), message_id) for message_id in ids])
    return {message_id: shown for (_, message_id), shown in found.items()}


def votes_of(db: sqlite3.Connection, slot: Slot, ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """The counts of these polls (WhatsApp ids): {poll id: {option: voters}}, every option
    of a stored poll present (0 when nobody chose it); a poll with neither stored options
    nor votes is absent."""
    counts: dict[str, dict[str, int]] = {}
    if not ids:
        return counts
    for poll_id, payload in db.execute(
        f"SELECT wa_message_id, payload FROM messages WHERE slot=? AND wa_message_id IN "
        f"({_marks(ids)}) AND message_type='poll'",
        (str(slot), *ids),
    ):
        counts[poll_id] = dict.fromkeys(poll_options(payload), 0)
    for poll_id, option, voters in db.execute(
        "SELECT poll_id, j.value, count(*) FROM poll_votes, json_each(poll_votes.options) j "
        f"WHERE slot=? AND poll_id IN ({_marks(ids)}) GROUP BY poll_id, j.value",
        (str(slot), *ids),
    ):
        tally = counts.setdefault(poll_id, {})
        tally[str(option)] = tally.get(str(option), 0) + int(voters)
    return counts


_SHOWN = ("reactor", "emoji", "from_me")  # what a data API item shows of a reaction


def decorate(db: sqlite3.Connection, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to each message item (of any slot: a search spans several) what the data API
    shows besides its row: its `reactions` ([{reactor, emoji, from_me}], [] when none)
    and, for a poll, its `votes` {option: count}. The items, changed in place."""
    found = reactions_across(db, [(str(i["slot"]), str(i["wa_message_id"])) for i in items])
    polls: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        shown = found.get((str(item["slot"]), str(item["wa_message_id"])), [])
        item["reactions"] = [
            {key: r[key] for key in ("reactor", "emoji", "from_me")} for r in shown
        ]
        if item.get("message_type") == "poll":
            polls.setdefault(str(item["slot"]), []).append(item)
    for name, asked in polls.items():
        votes = votes_of(db, Slot.parse(name), [item["wa_message_id"] for item in asked])
        for item in asked:
            item["votes"] = votes.get(item["wa_message_id"], {})
    return items


class Reactions:
    """The remote changes' side: each reaction or vote in its own transaction with its
    webhook event, on the shard database's thread."""

    def __init__(self, store: SerialDatabase, outbox: Outbox) -> None:
        self._store = store
        self._outbox = outbox

    async def _write(self, apply: Callable[[sqlite3.Connection], Event | None]) -> Event | None:
        def write(db: sqlite3.Connection) -> Event | None:
            with transaction(db):
                event = apply(db)
                if event is not None:
                    outbox_tables.add(db, [event])
                return event

        event = await self._store.call(write)
        if event is not None:
            self._outbox.added()
        return event

    async def react(self, change: MessageReaction) -> Event | None:
        """Store a reaction (`apply_reaction`); its event, None when nothing changed."""
        return await self._write(
            lambda db: apply_reaction(
                db,
                change.slot,
                change.chat_id,
                change.wa_message_id,
                change.reactor,
                change.emoji,
                change.from_me,
                change.timestamp,
            )
        )

    async def import_history(
        self, reactions: Sequence[MessageReaction], votes: Sequence[PollVote]
    ) -> int:
        """A history sync's reactions and votes, in one transaction, after its messages;
        no webhook events (history is not news). How many changed something."""

        def write(db: sqlite3.Connection) -> int:
            changed = 0
            with transaction(db):
                for r in reactions:
                    found = apply_reaction(
                        db,
                        r.slot,
                        r.chat_id,
                        r.wa_message_id,
                        r.reactor,
                        r.emoji,
                        r.from_me,
                        r.timestamp,
                    )
                    changed += found is not None
                for v in votes:
                    found = apply_vote(
                        db, v.slot, v.chat_id, v.poll_id, v.voter, v.options, v.timestamp
                    )
                    changed += found is not None
            return changed

        return await self._store.call(write)

    async def vote(self, change: PollVote) -> Event | None:
        """Store a vote (`apply_vote`); its event, None when nothing changed."""
        return await self._write(
            lambda db: apply_vote(
                db,
                change.slot,
                change.chat_id,
                change.poll_id,
                change.voter,
                change.options,
                change.timestamp,
            )
        )
