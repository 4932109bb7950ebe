"""Typing and recording between two simulated accounts through a real worker: the account
shows its presence in a chat (`POST .../presence`), and a peer sees it as `wa:presence` only
when it opened the chat (a subscription, renewed after a reconnect); bad requests change
nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.backends.simulator import phone_of
from wasp_worker.events import EventLog
from wasp_worker.presence import PresenceWatch
from wasp_worker.presence_http import PRESENCE
from wasp_worker.sessions import SessionManager
from wasp_worker.state import FEED

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_outbound import login
from tests.worker.test_sending import FakeBackend
from tests.worker.test_worker_http import config
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1, A2 = Slot.parse("A1"), Slot.parse("A2")
A1_JID = f"{phone_of(A1)}@s.whatsapp.net"


async def presences(worker: Client, slot: str) -> list[dict[str, Any]]:
    events = (await (await worker.get("/events?limit=5000")).json())["events"]
    return [
        e["payload"] for e in events if e["event"] == "wa:presence" and e["payload"]["slot"] == slot
    ]


async def subscribed(worker: Client, slot: str, times: int = 1) -> None:
    async def done() -> bool:
        logs = (await (await worker.get("/logs?limit=500")).json())["logs"]
        found = [e for e in logs if e["event"] == "presence_subscribed" and e["slot"] == slot]
        return len(found) >= times

    await eventually_async(done, f"{slot} subscribed {times} time(s)")


async def show(worker: Client, slot: str, chat: str, state: str) -> Any:
    return await worker.post(
        f"/api/accounts/{slot}/conversations/{chat}/presence", json={"state": state}
    )


async def test_a_peer_sees_typing_and_recording_only_in_a_chat_it_opened(worker: Client) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    # A2 has not opened the chat: WhatsApp sends it nothing.
    early = await show(worker, "A1", phone_of(A2), "typing")
    assert early.status == 200, await early.text()
    assert await early.json() == {
        "ok": True,
        "slot": "A1",
        "chat_id": f"{phone_of(A2)}@s.whatsapp.net",
        "state": "typing",
    }
    opened = await worker.post("/api/accounts/A2/openChat", json={"chat_id": phone_of(A1)})
    assert opened.status == 200
    await subscribed(worker, "A2")
    assert (await show(worker, "A1", phone_of(A2), "recording")).status == 200
    [seen] = await eventually_async(lambda: presences(worker, "A2"), "A2 sees A1 recording")
    assert (seen["chat_id"], seen["sender"], seen["state"]) == (A1_JID, A1_JID, "recording")
    assert isinstance(seen["at"], float)
    assert (await show(worker, "A1", phone_of(A2), "paused")).status == 200

    async def paused() -> list[str] | None:
        states = [p["state"] for p in await presences(worker, "A2")]
        return states if len(states) == 2 else None

    assert await eventually_async(paused, "A2 sees A1 pause") == ["recording", "paused"]
    assert await presences(worker, "A1") == []  # A1 never opened the chat with A2


async def test_the_messages_page_subscribes_and_a_reconnect_subscribes_again(
    worker: Client,
) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    page = await worker.get(f"/api/accounts/A2/conversations/{phone_of(A1)}/messages")
    assert page.status == 200
    await subscribed(worker, "A2")
    # The connection ends, and WhatsApp's subscriptions with it; the worker asks again.
    assert (await worker.post("/api/accounts/A2/destroy")).status == 200
    assert (await worker.post("/api/accounts/A2/connect")).status == 200
    await subscribed(worker, "A2", times=2)
    assert (await show(worker, "A1", phone_of(A2), "typing")).status == 200
    [seen] = await eventually_async(lambda: presences(worker, "A2"), "A2 sees A1 typing")
    assert seen["state"] == "typing"


async def test_bad_presence_requests_are_refused_with_a_reason(worker: Client) -> None:
    await login(worker, "A1")
    wrong = await show(worker, "A1", phone_of(A2), "dancing")
    assert wrong.status == 400
    assert "state" in (await wrong.json())["error"]
    extra = await worker.post(
        f"/api/accounts/A1/conversations/{phone_of(A2)}/presence",
        json={"state": "typing", "for": 5},
    )
    assert extra.status == 400
    offline = await show(worker, "A3", phone_of(A2), "typing")  # never connected
    assert offline.status == 409
    assert "connected" in (await offline.json())["error"]


async def test_a_backend_without_presence_answers_501_naming_it(tmp_path: Path) -> None:
    log = EventLog(stream=io.StringIO())
    app = build_app(config(tmp_path), log)
    plain = SessionManager(config(tmp_path), FakeBackend(), log)
    app[PRESENCE] = PresenceWatch(plain, log, app[FEED].emit)
    async with TestClient(TestServer(app), headers=CREDENTIAL) as client:
        answer = await show(client, "A1", phone_of(A2), "typing")
        assert answer.status == 501
        assert (await answer.json())["error"] == "presence: not supported by the FakeBackend"
