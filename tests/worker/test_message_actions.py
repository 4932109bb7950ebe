"""Actions on messages on one worker (simulator backend): a backend that does not send an
action's kind answers 501 naming it before anything is queued, and a delete for everyone
of someone else's message goes only in a group the account is an admin of (asked of the
group's server), reaching every other member as a tombstone, live for every member (the
admin's own once sent)."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from wasp_worker.backends.base import MEDIA_AND_TEXT
from wasp_worker.backends.simulator import SimulatorBackend, jid_of, lid_of, phone_of
from wasp_worker.state import QUEUE, SESSIONS

from tests.support.waiting import eventually_async
from wasp.message_actions import ActionRefused, check_emoji, check_options
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1, A2, A3 = (Slot.parse(s) for s in ("A1", "A2", "A3"))


def path(slot: Slot, chat: str, message_id: str, action: str = "") -> str:
    return (
        f"/api/accounts/{slot}/conversations/{urllib.parse.quote(chat)}/messages/"
        f"{message_id}{action}"
    )


async def connect(worker: Client, *slots: Slot) -> SimulatorBackend:
    for slot in slots:
        assert (await worker.post(f"/api/accounts/{slot}/connect")).status == 200
        assert (await worker.post(f"/api/accounts/{slot}/scan")).status == 200
    backend = worker.app[SESSIONS].backend
    assert isinstance(backend, SimulatorBackend)
    return backend


async def item(worker: Client, slot: Slot, chat: str, message_id: str) -> dict[str, Any] | None:
    where = f"/api/accounts/{slot}/conversations/{urllib.parse.quote(chat)}/messages?limit=500"
    answer = await worker.get(where)
    if answer.status != 200:
        return None
    found = [i for i in (await answer.json())["items"] if i["wa_message_id"] == message_id]
    return found[0] if found else None


def group_message(slot: Slot, group: str, sender: Slot, message_id: str) -> dict[str, Any]:
    """A message of `sender` in a group, as the server hands it to `slot`'s device."""
    return {
        "slot": str(slot),
        "wa_message_id": message_id,
        "timestamp": int(time.time()),
        "body": "a message to the group",
        "from": phone_of(sender),
        "to": group,
        "chat_id": group,
        "chat_type": "group",
        "sender_jid_raw": jid_of(sender),
        "sender_phone_jid": jid_of(sender),
        "from_me": slot == sender,
    }


async def test_a_backend_that_does_not_send_a_kind_answers_501_and_queues_nothing(
    worker: Client,
) -> None:
    backend = await connect(worker, A1, A2)
    sent = await worker.post("/api/accounts/A1/send", json={"to": phone_of(A2), "text": "hi"})
    message_id = (await sent.json())["message"]["waMessageId"]

    async def stored() -> dict[str, Any] | None:
        return await item(worker, A1, jid_of(A2), message_id)

    await eventually_async(stored, "A1 stores what it sent")
    backend.sends = MEDIA_AND_TEXT  # a backend that sends no action
    depth = await worker.app[QUEUE].depth()
    rows = len(await worker.app[QUEUE].heads("A1", time.time()))
    actions: list[tuple[str, str, str, Any]] = [
        ("reaction", "POST", "/reaction", {"emoji": "👍"}),
        ("edit", "PATCH", "", {"text": "changed"}),
        ("delete", "DELETE", "", None),
        ("vote", "POST", "/vote", {"options": []}),
    ]
    for kind, method, action, body in actions:
        answer = await worker.request(method, path(A1, jid_of(A2), message_id, action), json=body)
        assert answer.status == 501, kind
        assert (await answer.json())["error"] == (
            f"send.{kind}: not supported by the simulator backend"
        )
    assert await worker.app[QUEUE].depth() == depth
    assert len(await worker.app[QUEUE].heads("A1", time.time())) == rows


async def test_only_a_group_s_admin_deletes_another_member_s_message_for_everyone(
    worker: Client,
) -> None:
    backend = await connect(worker, A1, A2, A3)
    created = await worker.post(
        "/api/accounts/A1/groups",
        json={"name": "Team", "participants": [phone_of(A2), phone_of(A3)]},
    )
    group = (await created.json())["group"]["id"]
    message_id = "3EB0GROUPMSG0001"
    for member in (A1, A2, A3):  # A2 wrote to the group: every member's device gets it
        backend.server.post(member, group_message(member, group, A2, message_id), "message")
    for member in (A1, A2, A3):

        async def arrived(member: Slot = member) -> dict[str, Any] | None:
            return await item(worker, member, group, message_id)

        await eventually_async(arrived, f"{member} has the group's message")
    # A3 is a member, not an admin: refused, nothing queued.
    refused = await worker.delete(path(A3, group, message_id))
    assert refused.status == 409
    assert "not an admin" in (await refused.json())["error"]
    assert await worker.app[QUEUE].depth() == 0
    # A1 made the group: its admin may delete A2's message for everyone.
    accepted = await worker.delete(path(A1, group, message_id))
    assert accepted.status == 202, await accepted.text()
    for member in (A1, A2, A3):

        async def tombstone(member: Slot = member) -> bool:
            found = await item(worker, member, group, message_id)
            return found is not None and found["deleted_at"] is not None and found["body"] == ""

        await eventually_async(tombstone, f"{member} shows the tombstone")
    # Live, as the console sees it: the admin's own delete once sent, the others' received.
    answer = await (await worker.get("/events")).json()
    deleted = sorted(
        e["payload"]["slot"]
        for e in answer["events"]
        if e["event"] == "wa:message_deleted" and e["payload"]["wa_message_id"] == message_id
    )
    assert deleted == ["A1", "A2", "A3"]


async def test_an_action_in_a_chat_named_by_lid_goes_to_the_phone_and_lands_in_that_chat(
    worker: Client,
) -> None:
    """WhatsApp may name a direct chat by the peer's LID: the action goes out to the phone
    JID (as a send to that chat does) and is applied to the chat the store has, the LID's."""
    backend = await connect(worker, A1, A2)
    chat, message_id = lid_of(A2), "3EB0LIDCHAT00001"
    # A1's phone wrote to A2; A1's device names the chat by A2's LID.
    backend.server.post(A1, group_message(A1, chat, A1, message_id), "message")
    backend.server.post(A2, group_message(A2, jid_of(A1), A1, message_id), "message")

    async def arrived() -> dict[str, Any] | None:
        return await item(worker, A1, chat, message_id)

    await eventually_async(arrived, "A1 has the message in the LID's chat")
    answer = await worker.patch(path(A1, chat, message_id), json={"text": "corrected"})
    assert answer.status == 202, await answer.text()

    async def edited(slot: Slot, where: str) -> bool:
        found = await item(worker, slot, where, message_id)
        return found is not None and found["body"] == "corrected"

    await eventually_async(lambda: edited(A1, chat), "A1's own store shows it in the LID chat")
    await eventually_async(lambda: edited(A2, jid_of(A1)), "A2 gets it in its chat with A1")


# One emoji however many code points it takes; the table is written out by hand.
ONE_EMOJI = [
    "👍",
    "👍🏽",  # a skin tone
    "👨\u200d👩\u200d👧\u200d👦",  # a family: four joined by ZWJ
    "🏳️\u200d🌈",  # a flag sequence with a variation selector
    "🇧🇷",  # a regional-indicator flag
    "1️⃣",  # a keycap
    "❤️",
    "",  # no emoji: the reaction is removed
]
NOT_ONE = ["a", "ok", "👍👍", "👍 ", " 👍", "🇧", "👍a", "\u200d", ":thumbsup:"]


@pytest.mark.parametrize("text", ONE_EMOJI)
def test_one_emoji_of_any_length_is_a_reaction(text: str) -> None:
    assert check_emoji(text) == text


@pytest.mark.parametrize("text", NOT_ONE)
def test_anything_but_exactly_one_emoji_is_refused(text: str) -> None:
    with pytest.raises(ActionRefused, match=r"^emoji: "):
        check_emoji(text)


def test_a_vote_takes_the_poll_s_own_options_each_once_within_its_count() -> None:
    offered = ["pizza", "sushi", "salad"]
    assert check_options(["sushi"], offered, 1) == ["sushi"]
    assert check_options([], offered, 1) == []  # withdrawn
    assert check_options(["salad", "pizza"], offered, 0) == ["salad", "pizza"]  # 0: any number
    for chosen, selectable in ((["tacos"], 1), (["sushi", "sushi"], 0), (["pizza", "sushi"], 1)):
        with pytest.raises(ActionRefused, match=r"^options: "):
            check_options(chosen, offered, selectable)
