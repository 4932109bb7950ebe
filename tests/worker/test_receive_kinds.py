"""Receiving every kind WhatsApp sends: reactions, poll votes, replies, mentions, locations,
contact cards and polls in the shard's real store (`wasp_worker.reactions`, `history`),
and through a real worker with the simulator backend."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wasp_worker import history, reactions
from wasp_worker.db import transaction
from wasp_worker.store import ShardStore

from wasp.slots import Slot

A1, A2 = Slot.parse("A1"), Slot.parse("A2")
CHAT = "491700000002@s.whatsapp.net"
POLL = {"question": "Lunch?", "options": ["pizza", "sushi", "salad"], "selectable_count": 2}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ShardStore]:
    opened = ShardStore.in_folder(tmp_path)
    yield opened
    opened.close()


def fields(message_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "slot": "A1",
        "wa_message_id": message_id,
        "chat_id": CHAT,
        "from": "491700000002",
        "body": extra.pop("body", "hello"),
        "timestamp": extra.pop("timestamp", 1000.0),
        **extra,
    }


def call(store: ShardStore, fn: Any) -> Any:
    def run(db: sqlite3.Connection) -> Any:
        with transaction(db):
            return fn(db)

    return store.db.call_blocking(run)


def changes(store: ShardStore) -> list[str]:
    return [
        row[0]
        for row in store.db.call_blocking(
            lambda db: db.execute(
                "SELECT key FROM changes WHERE kind='message' ORDER BY seq"
            ).fetchall()
        )
    ]


def stored(store: ShardStore, message_ids: list[str]) -> None:
    for message_id in message_ids:
        extra = {"message_type": "poll", "poll": POLL} if message_id.startswith("poll") else {}
        call(store, lambda db, m=message_id, e=extra: history.insert(db, A1, "in", fields(m, **e)))


def react(store: ShardStore, message_id: str, reactor: str, emoji: str, at: float) -> Any:
    return call(
        store,
        lambda db: reactions.apply_reaction(db, A1, CHAT, message_id, reactor, emoji, False, at),
    )


def test_a_reaction_is_kept_per_person_replaced_by_a_newer_one_and_removed_by_an_empty_one(
    store: ShardStore,
) -> None:
    stored(store, ["m1"])
    before = len(changes(store))
    event = react(store, "m1", "bob@s.whatsapp.net", "👍", 10.0)
    assert event is not None
    assert event.type == "message.reaction"
    assert event.data["emoji"] == "👍"
    assert event.data["id"] is not None
    assert changes(store)[before:] == ["m1"]  # a sync client sees the message again
    assert react(store, "m1", "bob@s.whatsapp.net", "👍", 11.0) is None  # same: no news
    assert react(store, "m1", "carol@s.whatsapp.net", "❤️", 12.0) is not None
    assert react(store, "m1", "bob@s.whatsapp.net", "😂", 9.0) is None  # older than stored
    assert react(store, "m1", "bob@s.whatsapp.net", "😂", 13.0) is not None
    shown = store.db.call_blocking(lambda db: reactions.reactions_of(db, A1, ["m1", "m2"]))
    assert [(r["reactor"], r["emoji"]) for r in shown["m1"]] == [
        ("carol@s.whatsapp.net", "❤️"),
        ("bob@s.whatsapp.net", "😂"),
    ]
    removed = react(store, "m1", "bob@s.whatsapp.net", "", 14.0)
    assert removed is not None
    assert removed.data["removed"] is True
    assert react(store, "m1", "bob@s.whatsapp.net", "", 15.0) is None  # nothing to remove
    shown = store.db.call_blocking(lambda db: reactions.reactions_of(db, A1, ["m1"]))
    assert [r["reactor"] for r in shown["m1"]] == ["carol@s.whatsapp.net"]


def test_a_reaction_to_a_message_not_stored_is_kept_without_a_sync_change(
    store: ShardStore,
) -> None:
    before = len(changes(store))
    event = react(store, "later", "bob@s.whatsapp.net", "👍", 10.0)
    assert event is not None
    assert event.data["id"] is None
    assert changes(store)[before:] == []  # a logged id not stored reads as deleted in sync
    stored(store, ["later"])
    items = store.db.call_blocking(
        lambda db: [
            history._message(row)
            for row in db.execute(
                f"SELECT {history._FIELDS} FROM messages WHERE wa_message_id='later'"
            )
        ]
    )
    store.db.call_blocking(lambda db: reactions.decorate(db, items))
    assert items[0]["reactions"] == [
        {"reactor": "bob@s.whatsapp.net", "emoji": "👍", "from_me": False}
    ]


def vote(store: ShardStore, voter: str, options: list[str], at: float) -> Any:
    return call(store, lambda db: reactions.apply_vote(db, A1, CHAT, "poll1", voter, options, at))


def test_votes_replace_each_voter_s_choice_and_count_per_option(store: ShardStore) -> None:
    stored(store, ["poll1"])
    first = vote(store, "bob", ["pizza", "sushi"], 10.0)
    assert first is not None
    assert first.type == "message.poll_vote"
    assert first.data["votes"] == {"pizza": 1, "sushi": 1, "salad": 0}
    assert vote(store, "bob", ["sushi", "pizza"], 11.0) is None  # the same choice
    assert vote(store, "carol", ["pizza"], 12.0) is not None
    assert vote(store, "bob", ["salad"], 9.0) is None  # older than bob's stored vote
    changed = vote(store, "bob", ["salad"], 13.0)
    assert changed is not None
    assert changed.data["votes"] == {"pizza": 1, "sushi": 0, "salad": 1}
    withdrawn = vote(store, "carol", [], 14.0)
    assert withdrawn is not None
    assert withdrawn.data["options"] == []
    assert vote(store, "carol", ["sushi"], 13.5) is None  # older than the withdrawal
    counts = store.db.call_blocking(lambda db: reactions.votes_of(db, A1, ["poll1"]))
    assert counts == {"poll1": {"pizza": 0, "sushi": 0, "salad": 1}}


def test_a_vote_by_option_hashes_resolves_against_the_stored_poll(store: ShardStore) -> None:
    stored(store, ["poll1"])

    def hashed(name: str) -> str:  # the oracle: SHA-256 of the option's name, as WhatsApp does
        return reactions.HASH_PREFIX + hashlib.sha256(name.encode()).hexdigest()

    event = vote(store, "bob", [hashed("salad"), hashed("pizza"), hashed("not an option")], 10.0)
    assert event is not None
    assert event.data["options"] == ["pizza", "salad"]
    row = store.db.call_blocking(
        lambda db: db.execute("SELECT options FROM poll_votes WHERE voter='bob'").fetchone()
    )
    assert json.loads(row[0]) == ["pizza", "salad"]
