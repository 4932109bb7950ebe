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
from aiohttp.test_utils import TestClient
from wasp_worker import history, message_pages, reactions, retention
from wasp_worker.backends.base import HistoryImport, MessageReaction, PollVote
from wasp_worker.backends.simulator import SimulatorBackend, lid_of, phone_of
from wasp_worker.db import transaction
from wasp_worker.message_pages import SearchFilters
from wasp_worker.state import SESSIONS
from wasp_worker.store import ShardStore

from tests.support.waiting import eventually_async
from tests.worker.test_outbound import login
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


# -- through a real worker (simulator backend): store, data API, live events, webhooks --------

Client = TestClient[Any, Any]


def inbound(message_id: str, **extra: Any) -> dict[str, Any]:
    """A message as a backend hands it to the worker (`on_inbound`), from A1 to A2."""
    phone = phone_of(A1)
    return {
        "slot": "A2",
        "from": phone,
        "to": phone_of(A2),
        "body": extra.pop("body", ""),
        "chat_id": f"{phone}@s.whatsapp.net",
        "chat_type": "direct",
        "sender_jid_raw": f"{phone}@s.whatsapp.net",
        "push_name": None,
        "wa_message_id": message_id,
        "timestamp": extra.pop("timestamp", 1_795_000_000),
        "media_type": None,
        "media_url": None,
        "mime_type": None,
        "file_name": None,
        "file_size": None,
        "from_me": False,
        "sender_lid": lid_of(A1),
        "sender_phone_jid": f"{phone}@s.whatsapp.net",
        **extra,
    }


async def live(worker: Client, name: str) -> list[dict[str, Any]]:
    events = (await (await worker.get("/events?limit=5000")).json())["events"]
    return [e["payload"] for e in events if e["event"] == name]


def outbox(work_dir: Path, kind: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(work_dir / "queue.sqlite3")
    try:
        rows = db.execute("SELECT body FROM outbox WHERE type=? ORDER BY seq", (kind,)).fetchall()
    finally:
        db.close()
    return [json.loads(row[0])["data"] for row in rows]


async def deliver(worker: Client, fields: dict[str, Any]) -> None:
    backend = worker.app[SESSIONS].backend
    assert backend.on_inbound is not None
    await backend.on_inbound(fields)


async def remote(worker: Client, change: Any) -> None:
    backend = worker.app[SESSIONS].backend
    assert isinstance(backend, SimulatorBackend)
    assert backend.on_remote is not None
    await backend.on_remote(change)


LOCATION = {"latitude": -23.55, "longitude": -46.63, "name": "Sé", "address": "Praça da Sé"}
CARD = {"name": "Bea", "vcard": "BEGIN:VCARD\nFN:Bea\nEND:VCARD", "phone": "5511988887777"}


async def test_each_kind_is_stored_and_shown_in_events_webhooks_and_every_data_read(
    worker: Client, tmp_path: Path
) -> None:
    work_dir = tmp_path / "data"
    await login(worker, "A2")
    chat = f"{phone_of(A1)}@s.whatsapp.net"
    sent = [
        inbound("K1", body="hello", timestamp=1_795_000_001),
        inbound(
            "K2",
            body="yes, see @A2",
            timestamp=1_795_000_002,
            quoted_id="K1",
            mentions=[f"{phone_of(A2)}@s.whatsapp.net"],
        ),
        inbound(
            "K3", body="Sé", message_type="location", location=LOCATION, timestamp=1_795_000_003
        ),
        inbound("K4", body="Bea", message_type="contact", contacts=[CARD], timestamp=1_795_000_004),
        inbound("K5", body="Lunch?", message_type="poll", poll=POLL, timestamp=1_795_000_005),
    ]
    for fields in sent:
        await deliver(worker, fields)

    # Live and webhook events carry every kind key, filled in when a backend left one out.
    arrived = {m["wa_message_id"]: m for m in await live(worker, "wa:message")}
    hooks = {m["wa_message_id"]: m for m in outbox(work_dir, "message.received")}
    for shown in (arrived, hooks):
        assert shown["K1"]["message_type"] == "text"
        assert (shown["K1"]["quoted_id"], shown["K1"]["mentions"]) == (None, [])
        assert shown["K2"]["quoted_id"] == "K1"
        assert shown["K2"]["mentions"] == [f"{phone_of(A2)}@s.whatsapp.net"]
        assert (shown["K3"]["message_type"], shown["K3"]["location"]) == ("location", LOCATION)
        assert shown["K4"]["contacts"] == [CARD]
        assert shown["K5"]["poll"] == POLL

    # Every read of the data API shows them.
    page = await (await worker.get(f"/api/accounts/A2/conversations/{chat}/messages")).json()
    items = {m["wa_message_id"]: m for m in page["items"]}
    synced = await (await worker.get("/api/accounts/A2/sync")).json()
    in_sync = {m["wa_message_id"]: m for m in synced["messages"]}
    found = await (await worker.get("/api/accounts/A2/search?q=lunch")).json()
    opened = await worker.post("/api/accounts/A2/openChat", json={"chat_id": chat})
    in_chat = {m["wa_message_id"]: m for m in (await opened.json())["messages"]}
    for shown in (items, in_sync, in_chat):
        assert shown["K2"]["quoted_id"] == "K1"
        assert shown["K2"]["mentions"] == [f"{phone_of(A2)}@s.whatsapp.net"]
        assert (shown["K3"]["message_type"], shown["K3"]["location"]) == ("location", LOCATION)
        assert (shown["K4"]["message_type"], shown["K4"]["contacts"]) == ("contact", [CARD])
        assert shown["K5"]["poll"] == POLL
        assert shown["K5"]["votes"] == {"pizza": 0, "sushi": 0, "salad": 0}
        assert shown["K1"]["reactions"] == []
        assert "votes" not in shown["K1"]
    [hit] = found["items"]
    assert (hit["wa_message_id"], hit["votes"]) == ("K5", {"pizza": 0, "sushi": 0, "salad": 0})


async def test_reactions_and_votes_reach_the_store_events_webhooks_and_sync(
    worker: Client, tmp_path: Path
) -> None:
    work_dir = tmp_path / "data"
    await login(worker, "A2")
    chat = f"{phone_of(A1)}@s.whatsapp.net"
    await deliver(worker, inbound("R1", body="lunch at 1?"))
    await deliver(worker, inbound("P1", body="Lunch?", message_type="poll", poll=POLL))
    since = (await (await worker.get("/api/accounts/A2/sync")).json())["next"]

    await remote(worker, MessageReaction(A2, chat, "R1", chat, "👍", False, 10.0))
    await remote(worker, MessageReaction(A2, chat, "R1", chat, "👍", False, 11.0))  # no news
    hashed = "sha256:" + hashlib.sha256(b"sushi").hexdigest()
    await remote(worker, PollVote(A2, chat, "P1", chat, (hashed, "pizza"), 12.0))

    [reacted] = await live(worker, "wa:reaction")
    assert (reacted["wa_message_id"], reacted["reactor"], reacted["emoji"]) == ("R1", chat, "👍")
    [hook] = outbox(work_dir, "message.reaction")
    assert hook == reacted
    [voted] = await live(worker, "wa:poll_vote")
    assert voted["options"] == ["pizza", "sushi"]
    assert voted["votes"] == {"pizza": 1, "sushi": 1, "salad": 0}
    assert outbox(work_dir, "message.poll_vote") == [voted]

    changed = await (await worker.get(f"/api/accounts/A2/sync?since={since}")).json()
    shown = {m["wa_message_id"]: m for m in changed["messages"]}
    assert shown["R1"]["reactions"] == [{"reactor": chat, "emoji": "👍", "from_me": False}]
    assert shown["P1"]["votes"] == {"pizza": 1, "sushi": 1, "salad": 0}

    await remote(worker, MessageReaction(A2, chat, "R1", chat, "", False, 13.0))
    removed = await live(worker, "wa:reaction")
    assert [r["removed"] for r in removed] == [False, True]
    page = await (await worker.get(f"/api/accounts/A2/conversations/{chat}/messages")).json()
    assert {m["wa_message_id"]: m["reactions"] for m in page["items"]}["R1"] == []


async def test_edits_and_deletes_are_live_events_too(worker: Client, tmp_path: Path) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    sent = await worker.post(
        "/api/accounts/A1/send", json={"to": phone_of(A2), "text": "see you at 10"}
    )
    message_id = (await sent.json())["message"]["waMessageId"]

    async def arrived() -> bool:
        return any(m["wa_message_id"] == message_id for m in await live(worker, "wa:message"))

    await eventually_async(arrived, "A2 has the message")
    backend = worker.app[SESSIONS].backend
    assert isinstance(backend, SimulatorBackend)
    assert await backend.edit(A1, message_id, "see you at 11")
    [edited, *_] = await eventually_async(
        lambda: live(worker, "wa:message_edited"), "wa:message_edited"
    )
    assert (edited["wa_message_id"], edited["body"]) == (message_id, "see you at 11")
    assert await backend.revoke(A1, message_id)
    deleted = await eventually_async(lambda: live(worker, "wa:message_deleted"), "deleted")
    assert {d["slot"] for d in deleted} == {"A1", "A2"}  # both devices of the chat
    assert all("body" not in d for d in deleted)


async def test_a_message_the_store_refused_stays_on_the_server_and_comes_again(
    worker: Client, tmp_path: Path
) -> None:
    """The store fails (a real SQLite error, from a trigger): the message is not lost, the
    simulated server hands it over again once the store takes it, and it is stored once."""
    work_dir = tmp_path / "data"
    await login(worker, "A1")
    await login(worker, "A2")
    db = sqlite3.connect(work_dir / "queue.sqlite3")
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.direction='in' "
        "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
    )
    db.commit()
    try:
        sent = await worker.post("/api/accounts/A1/send", json={"to": phone_of(A2), "text": "hi"})
        message_id = (await sent.json())["message"]["waMessageId"]

        async def refused() -> bool:
            logs = (await (await worker.get("/logs?limit=500")).json())["logs"]
            return any(
                e["event"] == "history_write_failed" and e["wa_message_id"] == message_id
                for e in logs
            )

        await eventually_async(refused, "the store refused it")
        assert await live(worker, "wa:message") == []  # not stored: not news yet
        db.execute("DROP TRIGGER refuse")
        db.commit()

        async def stored() -> int:
            return int(
                db.execute(
                    "SELECT count(*) FROM messages WHERE slot='A2' AND wa_message_id=?",
                    (message_id,),
                ).fetchone()[0]
            )

        assert await eventually_async(stored, "handed over again and stored") == 1
        assert [m["wa_message_id"] for m in await live(worker, "wa:message")] == [message_id]
        received = [m["wa_message_id"] for m in outbox(work_dir, "message.received")]
        assert received == [message_id]
    finally:
        db.close()


def test_retention_takes_a_message_s_reactions_and_votes_with_it(store: ShardStore) -> None:
    stored(store, ["m1", "poll1", "m2"])
    react(store, "m1", "bob", "👍", 10.0)
    react(store, "m2", "bob", "👍", 10.0)
    vote(store, "bob", ["pizza"], 11.0)

    def doomed(db: sqlite3.Connection) -> list[retention.Doomed]:
        rows = db.execute(
            "SELECT id, slot, chat_id, wa_message_id FROM messages "
            "WHERE wa_message_id IN ('m1', 'poll1')"
        ).fetchall()
        return [retention.Doomed(row[0], row[1], row[2], row[3], None) for row in rows]

    assert store.db.call_blocking(lambda db: retention.delete(db, doomed(db))) == 2
    left = store.db.call_blocking(
        lambda db: (
            db.execute("SELECT wa_message_id FROM reactions").fetchall(),
            db.execute("SELECT count(*) FROM poll_votes").fetchone()[0],
        )
    )
    assert left == ([("m2",)], 0)


async def test_history_s_reactions_and_votes_are_stored_without_webhooks(
    worker: Client, tmp_path: Path
) -> None:
    work_dir = tmp_path / "data"
    await login(worker, "A2")
    chat = f"{phone_of(A1)}@s.whatsapp.net"
    messages = (
        {**inbound("H1", body="hello"), "read": True},
        {**inbound("H2", body="Lunch?", message_type="poll", poll=POLL), "read": True},
    )
    hashed = "sha256:" + hashlib.sha256(b"salad").hexdigest()
    await remote(
        worker,
        HistoryImport(
            A2,
            messages,
            (),
            (),
            (MessageReaction(A2, chat, "H1", chat, "😂", False, 5.0),),
            (PollVote(A2, chat, "H2", chat, (hashed,), 6.0),),
        ),
    )
    page = await (await worker.get(f"/api/accounts/A2/conversations/{chat}/messages")).json()
    shown = {m["wa_message_id"]: m for m in page["items"]}
    assert shown["H1"]["reactions"] == [{"reactor": chat, "emoji": "😂", "from_me": False}]
    assert shown["H2"]["votes"] == {"pizza": 0, "sushi": 0, "salad": 1}
    assert outbox(work_dir, "message.reaction") == []  # history is not news
    assert outbox(work_dir, "message.poll_vote") == []


def test_a_search_across_slots_shows_each_message_its_own_reactions_and_votes(
    store: ShardStore,
) -> None:
    """WhatsApp ids are an account's own: two slots may hold the same id. One lookup
    serves every slot of a search, and each item gets only its own slot's reactions."""
    for slot in (A1, A2):
        for message_id in ("same", "other", "poll1"):
            extra = {"message_type": "poll", "poll": POLL} if message_id == "poll1" else {}
            body = f"lunch {message_id}"
            call(
                store,
                lambda db, s=slot, m=message_id, e=extra, b=body: history.insert(
                    db, s, "in", {**fields(m, body=b, **e), "slot": str(s)}
                ),
            )
    call(
        store,
        lambda db: reactions.apply_reaction(db, A1, CHAT, "same", "bob@x", "👍", False, 10.0),
    )
    call(
        store,
        lambda db: reactions.apply_reaction(db, A2, CHAT, "other", "eve@x", "❤️", False, 11.0),
    )
    call(store, lambda db: reactions.apply_vote(db, A2, CHAT, "poll1", "eve@x", ["sushi"], 12.0))
    items = store.db.call_blocking(
        lambda db: message_pages.search(db, [A1, A2], "lunch", SearchFilters(), None, 20)
    )[0]
    shown = {
        (item["slot"], item["wa_message_id"]): [r["emoji"] for r in item["reactions"]]
        for item in items
    }
    assert shown == {
        ("A1", "same"): ["👍"],
        ("A1", "other"): [],
        ("A1", "poll1"): [],
        ("A2", "same"): [],
        ("A2", "other"): ["❤️"],
        ("A2", "poll1"): [],
    }
    votes = {item["slot"]: item["votes"] for item in items if item["wa_message_id"] == "poll1"}
    assert votes == {
        "A1": {"pizza": 0, "sushi": 0, "salad": 0},
        "A2": {"pizza": 0, "sushi": 1, "salad": 0},
    }
