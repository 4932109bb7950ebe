"""Typing and recording between two simulated accounts through a real worker: the account
shows its presence in a chat (`POST .../presence`), and a peer sees it as `wa:presence` only
when it opened the chat (a subscription, renewed after a reconnect); bad requests change
nothing."""

from __future__ import annotations

import io
import json
import os
import time
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

from tests.master.test_events_e2e import KEY, TOKEN, Listener, post, programs
from tests.support.cluster import free_port
from tests.support.master import start_master
from tests.support.processes import ProgramProcess
from tests.support.waiting import eventually, eventually_async
from tests.support.worker import CREDENTIAL, call_worker, start_worker
from tests.worker.test_outbound import login
from tests.worker.test_sending import FakeBackend
from tests.worker.test_worker_http import config
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1, A2 = Slot.parse("A1"), Slot.parse("A2")
A1_JID = f"{phone_of(A1)}@s.whatsapp.net"
__all__ = ["programs"]  # the fixture of the live events' end-to-end test


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


def test_presence_crosses_shards_through_the_master_to_a_socket_io_client(
    tmp_path: Path, programs: list[ProgramProcess]
) -> None:
    """Two shards sharing one simulated WhatsApp server, a master, the real JavaScript
    Socket.IO client: A60 (shard w2) shows typing to A3 (shard w1) before and after A3
    opened their chat; only what follows the subscription arrives."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    env = {"PATH": os.environ["PATH"]}
    w1, w2, master = free_port(), free_port(), free_port()
    push = {"MASTER_INTERNAL_URL": f"http://127.0.0.1:{master}", "MASTER_TOKEN": TOKEN}
    for name, port, first, last in (("w1", w1, "A1", "A50"), ("w2", w2, "A51", "A100")):
        programs.append(
            start_worker(
                tmp_path / f"{name}.log",
                port,
                tmp_path / name,
                config_dir,
                base_env=env,
                SLOT_FROM=first,
                SLOT_TO=last,
                SHARD_NAME=name,
                SIMULATOR_SERVER_DIR=str(tmp_path / "server"),
                **push,
            )
        )
    shards = [
        {"id": "w1", "port": w1, "from": "A1", "to": "A50"},
        {"id": "w2", "port": w2, "from": "A51", "to": "A100"},
    ]
    programs.append(
        start_master(
            tmp_path / "master.log",
            master,
            config_dir,
            base_env=env,
            SHARDS_JSON=json.dumps(shards),
            MASTER_TOKEN=TOKEN,
            API_KEYS=KEY,
        )
    )
    url = f"http://127.0.0.1:{master}"
    listener = Listener(url, {"apiKey": KEY, "all": True})
    try:
        listener.wait_for(lambda: any(x["type"] == "joined" for x in listener.lines), "join")
        for slot in ("A3", "A60"):
            post(f"{url}/api/accounts/{slot}/connect")
            post(f"{url}/api/accounts/{slot}/scan")
        a3, a60 = Slot.parse("A3"), Slot.parse("A60")
        chat = f"{url}/api/accounts/A60/conversations/{phone_of(a3)}/presence"
        assert post(chat, body={"state": "typing"})["state"] == "typing"  # A3 not watching
        post(f"{url}/api/accounts/A3/openChat", body={"chat_id": phone_of(a60)})

        def subscribed() -> bool:
            _, answer = call_worker("GET", f"http://127.0.0.1:{w1}/logs?limit=500")
            return any(e["event"] == "presence_subscribed" for e in answer["logs"])

        eventually(subscribed, "A3 subscribed to A60's presence")
        post(chat, body={"state": "recording"})
        listener.wait_for(lambda: bool(listener.events("wa:presence")), "wa:presence")
        time.sleep(0.5)  # a typing that was (wrongly) delivered would be in by now
        seen = listener.events("wa:presence")
        assert [(p["slot"], p["state"]) for p in seen] == [("A3", "recording")]
        assert seen[0]["sender"] == f"{phone_of(a60)}@s.whatsapp.net"
    finally:
        listener.close()
