"""Identities: a message carries its sender's phone JID and LID, the worker learns the pair,
and a reply to the LID reaches the phone it stands for (simulator end to end)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from wasp_worker.backends.simulator import lid_of, phone_of, slot_of, slot_of_lid

from tests.support.waiting import eventually_async
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1, A2 = Slot.parse("A1"), Slot.parse("A2")


@given(st.from_regex(r"[A-Z]{1,3}", fullmatch=True), st.integers(1, 10**6))
def test_every_simulated_account_has_a_lid_that_names_it_and_no_phone(
    prefix: str, number: int
) -> None:
    slot = Slot(prefix, number)
    lid = lid_of(slot)
    assert lid.endswith("@lid")
    assert slot_of_lid(lid) == slot
    assert slot_of(lid.partition("@")[0]) is None  # a LID is not a phone number
    assert slot_of_lid(f"{phone_of(slot)}@lid") != slot


async def messages_to(client: Client, slot: str) -> list[dict[str, Any]]:
    events = (await (await client.get("/events?limit=5000")).json())["events"]
    return [
        e["payload"] for e in events if e["event"] == "wa:message" and e["payload"]["slot"] == slot
    ]


async def test_a_reply_to_the_senders_lid_reaches_its_phone(worker: Client) -> None:
    for slot in ("A1", "A2"):
        await worker.post(f"/api/accounts/{slot}/connect")
        await worker.post(f"/api/accounts/{slot}/scan")
    await worker.post("/api/accounts/A1/send", json={"to": phone_of(A2), "text": "hi"})
    [arrived] = await eventually_async(lambda: messages_to(worker, "A2"), "A2 gets it")
    assert arrived["sender_lid"] == lid_of(A1)
    assert arrived["sender_phone_jid"] == f"{phone_of(A1)}@s.whatsapp.net"

    # The stored message keeps both identities too.
    shown = await worker.post("/api/accounts/A2/openChat", json={"chat_id": phone_of(A1)})
    [stored] = (await shown.json())["messages"]
    assert (stored["sender_lid"], stored["sender_phone_jid"], stored["from_me"]) == (
        lid_of(A1),
        f"{phone_of(A1)}@s.whatsapp.net",
        False,
    )

    sent = await worker.post("/api/accounts/A2/send", json={"to": lid_of(A1), "text": "back"})
    assert sent.status == 202
    assert (await sent.json())["message"]["to"] == f"{phone_of(A1)}@s.whatsapp.net"
    [reply] = await eventually_async(lambda: messages_to(worker, "A1"), "A1 gets the reply")
    assert reply["body"] == "back"


async def test_a_lid_the_map_does_not_know_is_looked_up_in_the_session_when_it_is_sent(
    worker: Client,
) -> None:
    for slot in ("A1", "A2"):
        await worker.post(f"/api/accounts/{slot}/connect")
        await worker.post(f"/api/accounts/{slot}/scan")
    # A2 never had a message from A1: only WhatsApp's store (the simulated server) knows.
    sent = await worker.post("/api/accounts/A2/send", json={"to": lid_of(A1), "text": "hello"})
    assert (await sent.json())["message"]["to"] == lid_of(A1)
    [arrived] = await eventually_async(lambda: messages_to(worker, "A1"), "A1 gets it")
    assert arrived["body"] == "hello"
    row = (await sent.json())["message"]["id"]
    message = (await (await worker.get(f"/api/accounts/A2/messages/{row}")).json())["message"]
    assert message["to"] == f"{phone_of(A1)}@s.whatsapp.net"
