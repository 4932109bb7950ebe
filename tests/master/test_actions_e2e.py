"""Actions on messages end to end: a real master in front of two real simulator workers
(A1..A50 and A51..A100) sharing one simulated WhatsApp server.

A1 writes to A2 (its shard) and to A51 (the other shard); reactions (and their removal),
edits, deletes for everyone and poll votes go through the master, are queued like sends,
and reach the other account's store, webhooks and data API as remote changes, while the
sender's own store shows them once sent. Every bad input is refused before anything is
queued (the queue's depth and the other side's store stay as they were). The test's own
record of what it sent is the oracle.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from wasp_worker.backends.simulator import ServerLedger, jid_of, lid_of, phone_of

from tests.master.fleet import SECRET, running_fleet
from tests.support.waiting import eventually
from wasp.slots import Slot

SHARDS = (("w1", "A1", "A50"), ("w2", "A51", "A100"))
PAIRS = [("A1", "A2"), ("A1", "A51")]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Fleet:
    url: str
    root: Path

    def call(self, method: str, path: str, body: Any = None) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "x-api-key": SECRET["admin"]}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return Answer(int(answer.status), json.loads(answer.read()))
        except urllib.error.HTTPError as error:
            return Answer(int(error.code), json.loads(error.read()))

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        answer = self.call(method, path, body)
        assert answer.status in (200, 202), (method, path, answer)
        return answer.body

    def database(self, slot: str) -> Path:
        shard = "w1" if Slot.parse(slot) <= Slot.parse("A50") else "w2"
        return self.root / shard / "queue.sqlite3"

    def read(self, slot: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """The shard's own database, read beside its worker (WAL: readers never block)."""
        uri = f"file:{self.database(slot)}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            return db.execute(sql, args).fetchall()

    def queued(self, slot: str) -> int:
        return int(self.read(slot, "SELECT count(*) FROM outbound WHERE slot=?", slot)[0][0])

    def events(self, slot: str, kind: str) -> list[dict[str, Any]]:
        """The slot's webhook events of a type, oldest first, as the outbox holds them."""
        rows = self.read(
            slot, "SELECT body FROM outbox WHERE slot=? AND type=? ORDER BY seq", slot, kind
        )
        return [json.loads(body)["data"] for (body,) in rows]

    def items(self, slot: str, chat: str) -> dict[str, dict[str, Any]]:
        """The chat's messages through the master's data API, by WhatsApp id."""
        path = f"/api/accounts/{slot}/conversations/{urllib.parse.quote(chat)}/messages"
        answer = self.call("GET", path + "?limit=500")
        if answer.status != 200:
            return {}
        return {item["wa_message_id"]: item for item in answer.body["items"]}

    def item(self, slot: str, chat: str, message_id: str) -> dict[str, Any] | None:
        return self.items(slot, chat).get(message_id)

    def field(self, slot: str, chat: str, message_id: str, name: str) -> Any:
        """One field of a message item (None while the message is not there)."""
        return (self.item(slot, chat, message_id) or {}).get(name)

    def wait_field(
        self, slot: str, chat: str, message_id: str, name: str, want: Any = None
    ) -> None:
        """Until the message's field is `want` (None: until it is set)."""

        def seen() -> bool:
            value = self.field(slot, chat, message_id, name)
            return bool(value) if want is None else value == want

        eventually(seen, f"{slot}'s {message_id} {name}")

    def state(self, slot: str, row: int) -> str:
        return str(self.ok("GET", f"/api/accounts/{slot}/messages/{row}")["message"]["state"])

    def sent(self, slot: str, row: int) -> bool:
        return self.state(slot, row) in ("sent", "delivered", "read", "played")

    def send_text(self, sender: str, receiver: str, text: str) -> str:
        """A text from sender to receiver, waited for on both sides: its WhatsApp id."""
        body = self.ok(
            "POST", f"/api/accounts/{sender}/send", {"to": number(receiver), "text": text}
        )
        row, message_id = body["message"]["id"], body["message"]["waMessageId"]
        eventually(lambda: self.sent(sender, row), f"{sender}'s text sent")
        eventually(lambda: self.item(receiver, jid(sender), message_id), f"{receiver} has it")
        eventually(lambda: self.item(sender, jid(receiver), message_id), f"{sender} has it")
        return str(message_id)


def jid(slot: str) -> str:
    return jid_of(Slot.parse(slot))


def number(slot: str) -> str:
    return phone_of(Slot.parse(slot))


def path(slot: str, chat: str, message_id: str, action: str = "") -> str:
    chat_part = urllib.parse.quote(chat)
    return f"/api/accounts/{slot}/conversations/{chat_part}/messages/{message_id}{action}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("actions")
    with running_fleet(root, SHARDS) as running:
        fleet = Fleet(running.master_url, root)
        for slot in ("A1", "A2", "A51"):
            fleet.ok("POST", f"/api/accounts/{slot}/connect")
            assert fleet.ok("POST", f"/api/accounts/{slot}/scan")["status"] == "CONNECTED"
        yield fleet


def phone_sends_poll(
    fleet: Fleet, sender: str, receiver: str, poll_id: str, options: list[str]
) -> None:
    """The sender's phone sends a poll (the server hands it to both accounts' devices: the
    receiver's as a message in, the sender's own as one it sent), as WhatsApp would."""
    question = {"question": "Lunch?", "options": options, "selectable_count": 1}
    ledger = ServerLedger(fleet.root / "server")
    common = {
        "wa_message_id": poll_id,
        "timestamp": int(time.time()),
        "body": "Lunch?",
        "message_type": "poll",
        "poll": question,
        "chat_type": "direct",
        "push_name": None,
    }
    try:
        ledger.post(
            Slot.parse(receiver),
            {
                **common,
                "slot": receiver,
                "from": number(sender),
                "to": number(receiver),
                "chat_id": jid(sender),
                "sender_jid_raw": jid(sender),
                "sender_phone_jid": jid(sender),
                "sender_lid": lid_of(Slot.parse(sender)),
                "from_me": False,
            },
            "message",
        )
        ledger.post(
            Slot.parse(sender),
            {
                **common,
                "slot": sender,
                "from": number(sender),
                "to": jid(receiver),
                "chat_id": jid(receiver),
                "sender_jid_raw": jid(sender),
                "sender_phone_jid": jid(sender),
                "sender_lid": None,
                "from_me": True,
            },
            "message",
        )
    finally:
        ledger.close()
    eventually(lambda: fleet.item(receiver, jid(sender), poll_id), f"{receiver} has the poll")
    eventually(lambda: fleet.item(sender, jid(receiver), poll_id), f"{sender} has the poll")


@pytest.mark.parametrize(("sender", "receiver"), PAIRS)
def test_a_reaction_and_its_removal_reach_both_stores_webhooks_and_api(
    fleet: Fleet, sender: str, receiver: str
) -> None:
    message_id = fleet.send_text(sender, receiver, f"react to me {receiver}")
    # The receiver reacts, with one emoji of several code points (a skin tone).
    answer = fleet.call(
        "POST", path(receiver, jid(sender), message_id, "/reaction"), {"emoji": "👍🏽"}
    )
    assert answer.status == 202, answer
    row = answer.body["message"]
    assert (row["type"], row["to"], row["state"]) == ("reaction", jid(sender), "queued")
    eventually(lambda: fleet.sent(receiver, row["id"]), "reaction sent")
    mine = {"reactor": jid(receiver), "emoji": "👍🏽"}

    def shown(slot: str, chat: str, from_me: bool) -> bool:
        item = fleet.item(slot, chat, message_id) or {}
        found = [{k: r[k] for k in ("reactor", "emoji", "from_me")} for r in item["reactions"]]
        return found == [{**mine, "from_me": from_me}]

    eventually(lambda: shown(receiver, jid(sender), True), "the reactor's own store shows it")
    eventually(lambda: shown(sender, jid(receiver), False), "the other account's store shows it")
    for slot, from_me in ((sender, False), (receiver, True)):
        events = [
            e for e in fleet.events(slot, "message.reaction") if e["wa_message_id"] == message_id
        ]
        assert [(e["reactor"], e["emoji"], e["from_me"]) for e in events] == [
            (jid(receiver), "👍🏽", from_me)
        ], slot
    # Removed: "" takes the reaction away on both sides, with a second event each.
    removal = fleet.ok("POST", path(receiver, jid(sender), message_id, "/reaction"), {"emoji": ""})
    eventually(lambda: fleet.sent(receiver, removal["message"]["id"]), "removal sent")

    def gone(slot: str, chat: str) -> bool:
        return (fleet.item(slot, chat, message_id) or {"reactions": [1]}).get("reactions") == []

    eventually(lambda: gone(sender, jid(receiver)), "the reaction is gone for the other side")
    eventually(lambda: gone(receiver, jid(sender)), "the reaction is gone for the reactor")
    removed = [
        e for e in fleet.events(sender, "message.reaction") if e["wa_message_id"] == message_id
    ]
    assert [(e["emoji"], e["removed"]) for e in removed] == [("👍🏽", False), ("", True)]


@pytest.mark.parametrize(("sender", "receiver"), PAIRS)
def test_an_edit_and_a_delete_reach_both_stores_webhooks_and_api(
    fleet: Fleet, sender: str, receiver: str
) -> None:
    message_id = fleet.send_text(sender, receiver, "teh typo")
    answer = fleet.call("PATCH", path(sender, jid(receiver), message_id), {"text": "the typo"})
    assert answer.status == 202, answer
    eventually(lambda: fleet.sent(sender, answer.body["message"]["id"]), "edit sent")
    for slot, chat in ((sender, jid(receiver)), (receiver, jid(sender))):
        fleet.wait_field(slot, chat, message_id, "body", "the typo")
        item = fleet.item(slot, chat, message_id) or {}
        assert item["edited_at"] is not None
        edits = [
            e for e in fleet.events(slot, "message.edited") if e["wa_message_id"] == message_id
        ]
        assert [e["body"] for e in edits] == ["the typo"], slot
    # Delete for everyone; a second DELETE answers the first one's row.
    first = fleet.call("DELETE", path(sender, jid(receiver), message_id))
    assert first.status == 202, first
    again = fleet.call("DELETE", path(sender, jid(receiver), message_id))
    assert (again.status, again.body["message"]["id"]) == (200, first.body["message"]["id"])
    eventually(lambda: fleet.sent(sender, first.body["message"]["id"]), "delete sent")
    for slot, chat in ((sender, jid(receiver)), (receiver, jid(sender))):
        fleet.wait_field(slot, chat, message_id, "deleted_at")
        item = fleet.item(slot, chat, message_id) or {}
        assert item["body"] == ""
        deletes = [
            e for e in fleet.events(slot, "message.deleted") if e["wa_message_id"] == message_id
        ]
        assert len(deletes) == 1, slot
    # An action on a tombstone is no longer possible; still one delete row in the queue.
    late = fleet.call("PATCH", path(sender, jid(receiver), message_id), {"text": "again"})
    assert late.status == 409, late
    assert late.body["error"].startswith("edit: "), late
    rows = fleet.read(
        sender,
        "SELECT count(*) FROM outbound WHERE kind='delete' AND json_extract(payload,'$.target')=?",
        message_id,
    )
    assert rows == [(1,)]


@pytest.mark.parametrize(("sender", "receiver"), PAIRS)
def test_a_vote_reaches_both_stores_webhooks_and_api(
    fleet: Fleet, sender: str, receiver: str
) -> None:
    poll_id = f"3EB0POLL{Slot.parse(receiver).number:08d}"
    phone_sends_poll(fleet, sender, receiver, poll_id, ["pizza", "sushi", "salad"])
    answer = fleet.call(
        "POST", path(receiver, jid(sender), poll_id, "/vote"), {"options": ["sushi"]}
    )
    assert answer.status == 202, answer
    eventually(lambda: fleet.sent(receiver, answer.body["message"]["id"]), "vote sent")
    counts = {"pizza": 0, "sushi": 1, "salad": 0}
    for slot, chat in ((receiver, jid(sender)), (sender, jid(receiver))):
        fleet.wait_field(slot, chat, poll_id, "votes", counts)
        votes = [e for e in fleet.events(slot, "message.poll_vote") if e["poll_id"] == poll_id]
        assert [(e["voter"], e["options"]) for e in votes] == [(jid(receiver), ["sushi"])], slot


def test_bad_input_queues_nothing(fleet: Fleet) -> None:
    """Each refusal names its reason, and neither the queue nor the other side changes."""
    message_id = fleet.send_text("A1", "A2", "leave me alone")
    received = fleet.send_text("A2", "A1", "a message A1 did not send")
    poll_id = "3EB0POLLBAD00001"
    phone_sends_poll(fleet, "A2", "A1", poll_id, ["yes", "no"])
    before = {slot: fleet.queued(slot) for slot in ("A1", "A2")}
    chat = jid("A2")
    cases = [
        ("POST", path("A1", chat, "3EB0UNKNOWN", "/reaction"), {"emoji": "👍"}, 404, "no message"),
        ("PATCH", path("A1", chat, "3EB0UNKNOWN"), {"text": "x"}, 404, "no message"),
        ("DELETE", path("A1", chat, "3EB0UNKNOWN"), None, 404, "no message"),
        ("POST", path("A1", chat, "3EB0UNKNOWN", "/vote"), {"options": ["yes"]}, 404, "no message"),
        # The message exists, but in another chat: not found there.
        ("POST", path("A1", jid("A51"), message_id, "/reaction"), {"emoji": "👍"}, 404, None),
        ("POST", path("A1", chat, message_id, "/reaction"), {"emoji": "ok"}, 422, "emoji: "),
        ("POST", path("A1", chat, message_id, "/reaction"), {"emoji": "👍👍"}, 422, "emoji: "),
        ("PATCH", path("A1", chat, received), {"text": "mine now"}, 409, "edit: "),
        ("DELETE", path("A1", chat, received), None, 409, "delete: "),
        ("POST", path("A1", chat, message_id, "/vote"), {"options": ["yes"]}, 422, "vote: "),
        ("POST", path("A1", chat, poll_id, "/vote"), {"options": ["maybe"]}, 422, "options: "),
        ("POST", path("A1", chat, poll_id, "/vote"), {"options": ["yes", "no"]}, 422, "options: "),
        ("POST", path("A1", chat, message_id, "/reaction"), {"emoji": 1}, 400, "invalid"),
    ]
    for method, where, body, status, reason in cases:
        answer = fleet.call(method, where, body)
        assert answer.status == status, (method, where, body, answer)
        assert answer.body["ok"] is False
        if reason is not None:
            assert reason in answer.body["error"], (method, where, answer)
    assert {slot: fleet.queued(slot) for slot in ("A1", "A2")} == before
    assert (fleet.item("A2", jid("A1"), message_id) or {})["reactions"] == []


def test_an_edit_after_fifteen_minutes_is_refused(fleet: Fleet) -> None:
    """A message the account's phone sent 16 minutes ago (history): too late to edit."""
    old_id = "3EB0OLDMESSAGE01"
    sixteen_minutes_ago = int(time.time()) - 16 * 60
    ledger = ServerLedger(fleet.root / "server")
    try:
        ledger.post(
            Slot.parse("A1"),
            {
                "slot": "A1",
                "wa_message_id": old_id,
                "timestamp": sixteen_minutes_ago,
                "body": "old news",
                "from": number("A1"),
                "to": jid("A2"),
                "chat_id": jid("A2"),
                "chat_type": "direct",
                "sender_jid_raw": jid("A1"),
                "sender_phone_jid": jid("A1"),
                "from_me": True,
            },
            "message",
        )
    finally:
        ledger.close()
    eventually(lambda: fleet.item("A1", jid("A2"), old_id), "A1 has its old message")
    before = fleet.queued("A1")
    answer = fleet.call("PATCH", path("A1", jid("A2"), old_id), {"text": "new news"})
    assert answer.status == 409, answer
    assert "15 minutes" in answer.body["error"], answer
    assert fleet.queued("A1") == before
    # Deleting it for everyone is still the account's right.
    assert fleet.call("DELETE", path("A1", jid("A2"), old_id)).status == 202


def test_a_retried_idempotency_key_answers_the_first_row(fleet: Fleet) -> None:
    message_id = fleet.send_text("A1", "A51", "once")
    where = path("A51", jid("A1"), message_id, "/reaction")
    first = fleet.call("POST", where, {"emoji": "🇧🇷", "idempotency_key": "react-once"})
    assert first.status == 202, first
    again = fleet.call("POST", where, {"emoji": "🎉", "idempotency_key": "react-once"})
    assert (again.status, again.body["message"]["id"]) == (200, first.body["message"]["id"])
    eventually(lambda: fleet.sent("A51", first.body["message"]["id"]), "reaction sent")
    item = eventually(
        lambda: (fleet.item("A1", jid("A51"), message_id) or {}).get("reactions"), "reaction"
    )
    assert [r["emoji"] for r in item] == ["🇧🇷"]
    keyed = fleet.read("A51", "SELECT count(*) FROM outbound WHERE idempotency_key='react-once'")
    assert keyed == [(1,)]


def test_an_edit_keeps_its_place_behind_the_chat_s_earlier_message(fleet: Fleet) -> None:
    """A1's pace lets one message a chat through every 2 s: a message queued right after
    another waits for its token, and an edit queued behind it in the same chat waits too,
    so the receiver gets the message before the edit (its webhook events say the order)."""
    message_id = fleet.send_text("A1", "A2", "edit me later")
    fleet.ok("PUT", "/api/accounts/A1/pacing", {"recipient": {"perMinute": 30, "burst": 1}})
    try:
        filler = fleet.ok("POST", "/api/accounts/A1/send", {"to": number("A2"), "text": "one"})
        held = fleet.ok("POST", "/api/accounts/A1/send", {"to": number("A2"), "text": "two"})
        edit = fleet.ok("PATCH", path("A1", jid("A2"), message_id), {"text": "edited late"})
        eventually(lambda: fleet.sent("A1", edit["message"]["id"]), "edit sent", timeout=20)
        assert fleet.sent("A1", held["message"]["id"])
        assert fleet.sent("A1", filler["message"]["id"])
        eventually(
            lambda: (fleet.item("A2", jid("A1"), message_id) or {}).get("body") == "edited late",
            "A2 sees the edit",
        )
        order = fleet.read(
            "A2",
            "SELECT type, json_extract(body, '$.data.wa_message_id') FROM outbox WHERE slot='A2' "
            "AND type IN ('message.received', 'message.edited') ORDER BY seq",
        )
        held_id = held["message"]["waMessageId"]
        assert order.index(("message.received", held_id)) < order.index(
            ("message.edited", message_id)
        )
    finally:
        fleet.ok("PUT", "/api/accounts/A1/pacing", {})


def test_in_a_group_across_shards_every_member_gets_the_action(fleet: Fleet) -> None:
    """A1 made a group with A2 (its shard) and A51 (the other): A51's reaction reaches A1
    and A2, and A1 (the admin) deletes A51's message for everyone, on both shards."""
    created = fleet.ok(
        "POST",
        "/api/accounts/A1/groups",
        {"name": "Across", "participants": [number("A2"), number("A51")]},
    )
    group, message_id = created["group"]["id"], "3EB0GROUPACROSS1"
    ledger = ServerLedger(fleet.root / "server")
    try:  # A51's phone wrote to the group: every member's device gets it
        for member in ("A1", "A2", "A51"):
            fields = {
                "slot": member,
                "wa_message_id": message_id,
                "timestamp": int(time.time()),
                "body": "hello group",
                "from": number("A51"),
                "to": group,
                "chat_id": group,
                "chat_type": "group",
                "sender_jid_raw": jid("A51"),
                "sender_phone_jid": jid("A51"),
                "from_me": member == "A51",
            }
            ledger.post(Slot.parse(member), fields, "message")
    finally:
        ledger.close()
    members = ("A1", "A2", "A51")
    for member in members:
        fleet.wait_field(member, group, message_id, "body", "hello group")
    reacted = fleet.ok("POST", path("A51", group, message_id, "/reaction"), {"emoji": "🎉"})
    eventually(lambda: fleet.sent("A51", reacted["message"]["id"]), "group reaction sent")
    mine = [{"reactor": jid("A51"), "emoji": "🎉"}]
    for member in members:
        fleet.wait_field(member, group, message_id, "reactions")
        found = fleet.field(member, group, message_id, "reactions")
        assert [{k: r[k] for k in ("reactor", "emoji")} for r in found] == mine, member
    # A2 is no admin: refused. A1 is: the message goes for everyone, on both shards.
    refused = fleet.call("DELETE", path("A2", group, message_id))
    assert refused.status == 409, refused
    deleted = fleet.call("DELETE", path("A1", group, message_id))
    assert deleted.status == 202, deleted
    for member in members:
        fleet.wait_field(member, group, message_id, "deleted_at")
