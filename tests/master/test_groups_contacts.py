"""Groups and contacts end to end: a real master in front of two real simulator workers
(A1..A50 and A51..A100) sharing one simulated WhatsApp server.

A1 makes a group with A2 (its shard) and A51 (the other shard); every member sees it, with
the admins the test expects, through the master; renames, participant changes, invite
links and leaving follow. The test's own record of who is in the group and who is an admin
is the oracle. Number checks say which numbers are simulated accounts and are paced per
account (429 with Retry-After); a block keeps the blocked account's messages from A1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from wasp_worker.backends.simulator import phone_of

from tests.master.fleet import SECRET, running_fleet
from tests.support.waiting import eventually
from wasp.slots import Slot

SHARDS = (("w1", "A1", "A50"), ("w2", "A51", "A100"))
NOT_ON_WHATSAPP = "15550001111"  # not a simulated account's number


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class Master:
    url: str

    def call(self, method: str, path: str, body: Any = None, **query: str) -> Answer:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "x-api-key": SECRET["admin"]}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return Answer(int(answer.status), json.loads(answer.read()), dict(answer.headers))
        except urllib.error.HTTPError as error:
            return Answer(int(error.code), json.loads(error.read()), dict(error.headers))

    def ok(self, method: str, path: str, body: Any = None, **query: str) -> dict[str, Any]:
        answer = self.call(method, path, body, **query)
        assert answer.status == 200, (method, path, answer)
        return answer.body


def jid(slot: str) -> str:
    return f"{phone_of(Slot.parse(slot))}@s.whatsapp.net"


def number(slot: str) -> str:
    return phone_of(Slot.parse(slot))


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    with running_fleet(tmp_path_factory.mktemp("groups"), SHARDS) as running:
        fleet = Master(running.master_url)
        for slot in ("A1", "A2", "A51", "A52"):
            fleet.ok("POST", f"/api/accounts/{slot}/connect")
            assert fleet.ok("POST", f"/api/accounts/{slot}/scan")["status"] == "CONNECTED"
        yield fleet


def view(fleet: Master, slot: str, group_id: str) -> tuple[str, set[str], set[str]]:
    """(name, members, admins) of a group as `slot` sees it in its group list."""
    listed = fleet.ok("GET", f"/api/accounts/{slot}/groups")["groups"]
    (group,) = [g for g in listed if g["id"] == group_id]
    members = {p["jid"] for p in group["participants"]}
    return group["name"], members, set(group["admins"])


def test_a_group_across_shards_from_creation_to_leaving(master: Master) -> None:
    created = master.ok(
        "POST",
        "/api/accounts/A1/groups",
        {"name": "Team", "participants": [number("A2"), "+" + number("A51"), NOT_ON_WHATSAPP]},
    )["group"]
    group_id = created["id"]
    members, admins = {jid("A1"), jid("A2"), jid("A51")}, {jid("A1")}
    for slot in ("A1", "A2", "A51"):  # A51 through the other shard's worker
        assert view(master, slot, group_id) == ("Team", members, admins), slot
    assert master.ok("GET", f"/api/accounts/A51/groups/{group_id}")["group"]["owner"] == jid("A1")

    master.ok("PATCH", f"/api/accounts/A1/groups/{group_id}", {"name": "Team 2"})
    assert view(master, "A51", group_id)[0] == "Team 2"
    refused = master.call("PATCH", f"/api/accounts/A2/groups/{group_id}", {"name": "Mine"})
    assert refused.status == 409
    assert "not an admin" in refused.body["error"]

    def change(action: str, *who: str) -> list[str]:
        path = f"/api/accounts/A1/groups/{group_id}/participants"
        done = master.ok("POST", path, {"action": action, "participants": list(who)})
        return [p["outcome"] for p in done["participants"]]

    assert change("promote", number("A2")) == ["ok"]
    admins.add(jid("A2"))
    assert change("remove", jid("A51")) == ["ok"]
    members.discard(jid("A51"))
    assert view(master, "A2", group_id) == ("Team 2", members, admins)
    assert master.ok("GET", "/api/accounts/A51/groups")["groups"] == []
    assert master.call("GET", f"/api/accounts/A51/groups/{group_id}").status == 404
    assert change("add", number("A51"), number("A52"), NOT_ON_WHATSAPP) == [
        "ok",
        "ok",
        "not_on_whatsapp",
    ]
    members |= {jid("A51"), jid("A52")}
    assert change("add", number("A52")) == ["already_a_participant"]
    assert change("demote", number("A2")) == ["ok"]
    admins.discard(jid("A2"))
    assert view(master, "A52", group_id) == ("Team 2", members, admins)

    link = master.ok("GET", f"/api/accounts/A1/groups/{group_id}/invite")["link"]
    assert link.startswith("https://chat.whatsapp.com/")
    assert master.ok("GET", f"/api/accounts/A1/groups/{group_id}/invite")["link"] == link
    fresh = master.ok("GET", f"/api/accounts/A1/groups/{group_id}/invite", revoke="true")["link"]
    assert fresh != link
    assert master.ok("GET", f"/api/accounts/A1/groups/{group_id}/invite")["link"] == fresh
    assert master.call("GET", f"/api/accounts/A2/groups/{group_id}/invite").status == 409

    master.ok("POST", f"/api/accounts/A2/groups/{group_id}/leave")
    members.discard(jid("A2"))
    assert group_id not in {g["id"] for g in master.ok("GET", "/api/accounts/A2/groups")["groups"]}
    assert view(master, "A51", group_id) == ("Team 2", members, admins)
    assert master.call("POST", f"/api/accounts/A2/groups/{group_id}/leave").status == 404


def test_bad_input_and_wrong_state_are_refused_before_anything_changes(master: Master) -> None:
    before = master.ok("GET", "/api/accounts/A1/groups")["groups"]
    bad: list[tuple[str, str, Any]] = [
        ("GET", "/api/accounts/A1/groups/not-a-group", None),
        ("POST", "/api/accounts/A1/groups", {"name": "X", "participants": []}),
        ("POST", "/api/accounts/A1/groups", {"name": " ", "participants": [number("A2")]}),
        ("POST", "/api/accounts/A1/groups", {"name": "X", "participants": ["12ab5678"]}),
        ("POST", "/api/accounts/A1/contacts/check", {"numbers": ["12345x78"]}),
        ("POST", "/api/accounts/A1/contacts/check", {"numbers": []}),
        (
            "POST",
            "/api/accounts/A1/contacts/check",
            {"numbers": [str(10**9 + n) for n in range(51)]},
        ),
        ("POST", "/api/accounts/A1/contacts/not-a-number/block", None),
    ]
    for method, path, body in bad:
        answer = master.call(
            method, path, body if body is not None else ({} if method == "POST" else None)
        )
        assert answer.status == 400, (path, body, answer)
        assert answer.body["error"]
    assert master.call("GET", "/api/accounts/A1/groups/120363000000000099@g.us").status == 404
    assert master.ok("GET", "/api/accounts/A1/groups")["groups"] == before
    # A slot whose session is not logged in: 409 naming its state, nothing sent.
    master.ok("POST", "/api/accounts/A3/connect")
    refused = master.call(
        "POST", "/api/accounts/A3/groups", {"name": "X", "participants": [number("A1")]}
    )
    assert refused.status == 409, refused
    assert "CONNECTING" in refused.body["error"]
    assert master.call("GET", "/api/accounts/A4/groups").status == 409  # never started
    assert master.ok("GET", "/api/accounts/A1/groups")["groups"] == before


def test_number_checks_say_who_is_on_whatsapp_and_are_paced_per_account(master: Master) -> None:
    asked = {
        number("A2"): True,
        number("A77"): True,
        NOT_ON_WHATSAPP: False,
        "4915112345678": False,
    }
    results = master.ok("POST", "/api/accounts/A52/contacts/check", {"numbers": list(asked)})
    assert {r["number"]: r["on_whatsapp"] for r in results["results"]} == asked
    assert {r["number"]: r["jid"] for r in results["results"]}[number("A77")] == jid("A77")
    # The bucket holds 50 numbers: 4 spent, 46 more fit, the next one does not.
    rest = [str(3_000_000_000 + n) for n in range(46)]
    assert master.call("POST", "/api/accounts/A52/contacts/check", {"numbers": rest}).status == 200
    over = master.call("POST", "/api/accounts/A52/contacts/check", {"numbers": [number("A1")]})
    assert over.status == 429, over
    assert int(over.headers["Retry-After"]) >= 1
    # Another account's bucket is its own.
    assert master.call("POST", "/api/accounts/A51/contacts/check", {"numbers": rest}).status == 200


def test_contact_info_and_picture(master: Master) -> None:
    info = master.ok("GET", f"/api/accounts/A1/contacts/{jid('A51')}/info")["info"]
    assert info["jid"] == jid("A51")
    assert info["status"]
    assert info["devices"] == [jid("A51")]
    assert info["verified_name"] is None
    assert master.ok("GET", f"/api/accounts/A1/contacts/{number('A51')}/picture")["picture"] is None
    assert master.call("GET", f"/api/accounts/A1/contacts/{NOT_ON_WHATSAPP}/info").status == 404


def inbound(master: Master, slot: str, chat: str) -> list[str]:
    path = f"/api/accounts/{slot}/conversations/{chat}/messages"
    answer = master.call("GET", path)
    return [] if answer.status == 404 else [m["body"] for m in answer.body["items"]]


def test_a_block_keeps_the_blocked_accounts_messages_from_the_account(master: Master) -> None:
    def send(sender: str, to: str, text: str) -> None:
        body = {"to": number(to), "text": text, "idempotency_key": f"block-{text}"}
        assert master.call("POST", f"/api/accounts/{sender}/send", body).status == 202

    assert master.ok("POST", f"/api/accounts/A2/contacts/{number('A51')}/block")["blocked"]
    send("A51", "A2", "while blocked")
    send("A52", "A2", "control")  # sent after: once it is in, the blocked one had its chance
    eventually(lambda: "control" in inbound(master, "A2", jid("A52")), "the control message", 30)
    assert "while blocked" not in inbound(master, "A2", jid("A51"))
    master.ok("POST", f"/api/accounts/A2/contacts/{number('A51')}/unblock")
    send("A51", "A2", "after unblock")
    eventually(lambda: "after unblock" in inbound(master, "A2", jid("A51")), "unblocked", 30)
    assert "while blocked" not in inbound(master, "A2", jid("A51"))
