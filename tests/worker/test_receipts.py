"""Receipts: a sent message moves sent -> delivered -> read, never back, and opening a chat
sends read receipts to WhatsApp. End to end through the simulator's server, which hands
out a `delivered` receipt when a message reaches the recipient's device and a `read` one
when the recipient opens the chat."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from wasp_worker.backends.simulator import phone_of
from wasp_worker.store import ShardStore

from tests.support.waiting import eventually_async
from tests.worker.test_outbound import login
from wasp.messages import TextMessage
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1, A2 = Slot.parse("A1"), Slot.parse("A2")
RANK = {"sent": 0, "delivered": 1, "read": 2, "played": 3}
CHAT = "x@s.whatsapp.net"


async def statuses(client: Client, slot: str, chat: str) -> dict[str, str]:
    """Body -> receipt status of the slot's own messages in a chat (opening it as the sender
    marks nothing: its side has no unread messages)."""
    shown = await client.post(f"/api/accounts/{slot}/openChat", json={"chat_id": chat})
    return {m["body"]: m["status"] for m in (await shown.json())["messages"]}


async def status_events(client: Client, slot: str) -> list[tuple[str, str]]:
    events = (await (await client.get("/events?limit=5000")).json())["events"]
    return [
        (e["payload"]["waMessageId"], e["payload"]["state"])
        for e in events
        if e["event"] == "wa:message_status" and e["payload"]["slot"] == slot
    ]


async def test_a_sent_message_is_delivered_then_read_when_the_recipient_opens_the_chat(
    worker: Client,
) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    a1, a2 = phone_of(A1), phone_of(A2)
    ids = []
    for text in ("one", "two"):
        sent = await worker.post("/api/accounts/A1/send", json={"to": a2, "text": text})
        ids.append((await sent.json())["message"]["waMessageId"])

    async def delivered() -> bool:
        return await statuses(worker, "A1", a2) == {"one": "delivered", "two": "delivered"}

    await eventually_async(delivered, "both delivered to A2's device")

    opened = await worker.post("/api/accounts/A2/openChat", json={"chat_id": a1})
    assert (await opened.json())["read_receipts"] == "sent"

    async def read() -> bool:
        return await statuses(worker, "A1", a2) == {"one": "read", "two": "read"}

    await eventually_async(read, "both read by A2")
    # Nothing unread any more: no second receipt, no second event.
    again = await worker.post("/api/accounts/A2/openChat", json={"chat_id": a1})
    assert (await again.json())["read_receipts"] == "none"
    await asyncio.sleep(0.5)
    events = await status_events(worker, "A1")
    for wa_message_id in ids:
        assert [s for i, s in events if i == wa_message_id] == ["sent", "delivered", "read"]


async def test_opening_a_chat_without_a_session_reads_it_here_and_says_no_receipt_went(
    worker: Client,
) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    a1, a2 = phone_of(A1), phone_of(A2)
    await worker.post("/api/accounts/A1/send", json={"to": a2, "text": "one"})

    async def arrived() -> bool:
        chats = (await (await worker.get("/api/accounts/A2/chats")).json())["chats"]
        return bool(chats) and chats[0]["unread"] == 1

    await eventually_async(arrived, "A2 has it unread")
    assert (await worker.post("/api/accounts/A2/destroy")).status == 200
    opened = await worker.post("/api/accounts/A2/openChat", json={"chat_id": a1})
    assert (await opened.json())["read_receipts"] == "not_connected"
    chats = (await (await worker.get("/api/accounts/A2/chats")).json())["chats"]
    assert chats[0]["unread"] == 0
    await asyncio.sleep(0.5)
    assert await statuses(worker, "A1", a2) == {"one": "delivered"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["delivered", "read", "played"]), max_size=8))
def test_receipts_only_move_a_message_forward(tmp_path_factory: Any, receipts: list[str]) -> None:
    """A message the account sent from its phone: only the history has it."""
    store = ShardStore(tmp_path_factory.mktemp("h") / "queue.sqlite3")

    async def run() -> str:
        fields = {"slot": "A1", "wa_message_id": "M1", "chat_id": CHAT, "from": "A1"}
        await store.history.record(A1, "out", fields)
        for state in receipts:
            await store.queue.receipt(A1, ["M1", "unknown"], state, CHAT)
        [message] = (await store.history.open_chat(A1, CHAT))[0]
        return str(message["status"])

    try:
        final = asyncio.run(run())
    finally:
        store.close()
    # The oracle: the furthest state any receipt named, by WhatsApp's own order.
    assert final == max(["sent", *receipts], key=RANK.__getitem__)


def text_to(destination: str) -> TextMessage:
    return TextMessage(to=destination, text="x")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(["delivered", "read", "played"]), max_size=6),
    st.integers(0, 6),
)
def test_a_queued_message_ends_at_its_furthest_receipt_even_one_before_its_send_returned(
    tmp_path_factory: Any, receipts: list[str], early: int
) -> None:
    """Receipts may come back while the send call is still returning (WhatsApp's device
    answers fast): the first `early` arrive before `finish`, the rest after."""
    store = ShardStore(tmp_path_factory.mktemp("q") / "queue.sqlite3")
    queue = store.queue

    async def run() -> str:
        row, _ = await queue.enqueue(A1, text_to(phone_of(A2)))
        for state in receipts[:early]:
            await queue.receipt(A1, [row.wa_message_id], state, CHAT)
        await queue.finish(row.id, "sent", None)
        for state in receipts[early:]:
            await queue.receipt(A1, [row.wa_message_id], state, CHAT)
        found = await queue.get(row.id)
        assert found is not None
        return found.state

    try:
        final = asyncio.run(run())
    finally:
        store.close()
    assert final == max(["sent", *receipts], key=RANK.__getitem__)
