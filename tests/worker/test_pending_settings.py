"""Pin, archive and mute set while the account's session is offline: kept pending in the
store, sent to WhatsApp (the simulated server, which the account's "phone" shows) when
the session connects, and not undone by the phone's settings read back after."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.backends.base import ChatSettingsChange, StatusEvent
from wasp_worker.backends.simulator import SimulatorBackend, jid_of
from wasp_worker.events import EventLog
from wasp_worker.history import complete
from wasp_worker.pending_settings import PendingSettings
from wasp_worker.sessions import SessionManager
from wasp_worker.settings_sender import SettingsSender
from wasp_worker.state import LOG
from wasp_worker.store import ShardStore

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_outbound import login
from tests.worker.test_remote_changes import arrived, rows, send, simulator
from tests.worker.test_worker_http import config
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1, A2 = Slot.parse("A1"), Slot.parse("A2")
CHAT = jid_of(A1)  # A2's chat with A1
PENDING_SQL = "SELECT field, value, sent FROM chat_settings_set WHERE slot='A2' ORDER BY field"


def worker_at(folder: Path, server: Path) -> Client:
    settings = config(folder, simulator_server_dir=server, pacing_recipient_burst=10)
    return TestClient(
        TestServer(build_app(settings, EventLog(stream=io.StringIO()))), headers=CREDENTIAL
    )


async def a_chat_then_offline(worker: Client, store: Path) -> None:
    """A1 writes to A2 (A2 has a conversation with A1), then A2's session stops."""
    await login(worker, "A1")
    await login(worker, "A2")
    await arrived(store, A2, await send(worker, "hi"))
    assert (await worker.post("/api/accounts/A2/destroy")).status == 200


async def patch(worker: Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = await worker.patch(f"/api/accounts/A2/conversations/{CHAT}", json=body)
    assert answer.status == 200, await answer.text()
    return dict(await answer.json())


async def conversation(worker: Client) -> dict[str, Any]:
    """The conversation, with the answer's `pending` in it."""
    got = await worker.get(f"/api/accounts/A2/conversations/{CHAT}")
    body = await got.json()
    return {**body["conversation"], "pending": body["pending"]}


async def read_back(worker: Client, seen_before: int) -> None:
    """Until the device of A2 took one more of the phone's settings from the server."""

    async def taken() -> bool:
        seen = [e for e in worker.app[LOG].recent() if e["event"] == "wa_chat_settings_seen"]
        return len(seen) > seen_before

    await eventually_async(taken, "the phone's settings read back")


def seen_count(worker: Client) -> int:
    return sum(e["event"] == "wa_chat_settings_seen" for e in worker.app[LOG].recent())


async def test_a_setting_made_offline_reaches_the_phone_at_the_connect_and_stays(
    tmp_path: Path,
) -> None:
    store = tmp_path / "data"
    async with worker_at(tmp_path, tmp_path / "whatsapp") as worker:
        await a_chat_then_offline(worker, store)
        phone = simulator(worker)
        # The phone pins the chat and mutes it while the worker's session is away...
        await phone.phone_sets(A2, CHAT, ChatSettingsChange(pinned=True, mute=True, muted_until=5))
        # ...then the API unpins it and mutes it longer: kept for WhatsApp.
        answer = await patch(worker, {"pinned": False, "muted_until": 2e9, "tags": ["vip"]})
        assert answer["whatsapp"] == "pending"
        assert rows(store, PENDING_SQL) == [("muted_until", 2e9, 0), ("pinned", 0.0, 0)]
        assert (await phone.phone_settings(A2))[CHAT]["pinned"] is True
        assert (await conversation(worker))["pending"] == ["muted_until", "pinned"]

        seen = seen_count(worker)
        assert (await worker.post("/api/accounts/A2/connect")).status == 200
        await read_back(worker, seen)  # the phone's older pin and mute came back, too late
        assert (await phone.phone_settings(A2))[CHAT] == {
            "pinned": False,
            "archived": False,
            "muted_until": 2e9,
        }
        found = await conversation(worker)
        assert (found["pinned"], found["muted_until"], found["tags"]) == (False, 2e9, ["vip"])
        assert found["pending"] == []
        assert rows(store, PENDING_SQL) == [("muted_until", 2e9, 1), ("pinned", 0.0, 1)]

        # Sent once: a later change on the phone is the phone's to make.
        seen = seen_count(worker)
        await phone.phone_sets(A2, CHAT, ChatSettingsChange(pinned=True))
        await read_back(worker, seen)
        assert (await conversation(worker))["pinned"] is True
        assert rows(store, PENDING_SQL) == [("muted_until", 2e9, 1)]


async def test_a_phone_change_made_after_the_api_s_wins_on_both_sides(tmp_path: Path) -> None:
    store = tmp_path / "data"
    async with worker_at(tmp_path, tmp_path / "whatsapp") as worker:
        await a_chat_then_offline(worker, store)
        phone = simulator(worker)
        assert (await patch(worker, {"archived": True}))["whatsapp"] == "pending"
        await phone.phone_sets(A2, CHAT, ChatSettingsChange(archived=False, at=time.time() + 1))
        seen = seen_count(worker)
        assert (await worker.post("/api/accounts/A2/connect")).status == 200
        await read_back(worker, seen)
        assert (await phone.phone_settings(A2))[CHAT]["archived"] is False
        assert (await conversation(worker))["archived"] is False
        assert rows(store, PENDING_SQL) == []


async def test_a_pending_setting_outlives_a_worker_restart(tmp_path: Path) -> None:
    server = tmp_path / "whatsapp"
    store = tmp_path / "data"
    async with worker_at(tmp_path, server) as first:
        await a_chat_then_offline(first, store)
        assert (await patch(first, {"archived": True}))["whatsapp"] == "pending"
    assert rows(store, PENDING_SQL) == [("archived", 1.0, 0)]

    async with worker_at(tmp_path, server) as second:
        phone = simulator(second)
        assert (await phone.phone_settings(A2)).get(CHAT, {}).get("archived") is not True
        assert (await second.post("/api/accounts/A2/connect")).status == 200

        async def archived() -> bool:
            return bool((await phone.phone_settings(A2)).get(CHAT, {}).get("archived"))

        await eventually_async(archived, "the archive on the phone after the restart")
        assert rows(store, PENDING_SQL) == [("archived", 1.0, 1)]
        assert (await conversation(second))["archived"] is True


class FlakySimulator(SimulatorBackend):
    """WhatsApp refusing a chat's patches as many times as `refusals` says, then taking
    them: a fault the simulator's server never produces."""

    refusals: dict[str, int] = {}  # noqa: RUF012 (each test sets its own)

    async def send_chat_settings(
        self, slot: Slot, chat_id: str, change: ChatSettingsChange, last_message_at: float | None
    ) -> None:
        if self.refusals.get(chat_id, 0) > 0:
            self.refusals[chat_id] -= 1
            raise RuntimeError("app_state_error: refused")
        await super().send_chat_settings(slot, chat_id, change, last_message_at)


async def test_a_failed_send_is_tried_again_then_given_up(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = EventLog(stream=stream)
    shard = ShardStore.in_folder(tmp_path)
    backend = FlakySimulator(tmp_path, owner="test")
    sessions = SessionManager(config(tmp_path), backend, log)
    sender = SettingsSender(PendingSettings(shard.db), sessions, log, retry_s=0.05, attempts=3)
    backend.before_settings_read = sender.flush
    other = jid_of(Slot.parse("A3"))
    try:
        for chat, message in ((CHAT, "M1"), (other, "M2")):
            inbound = {"slot": "A2", "wa_message_id": message, "chat_id": chat, "from": chat}
            assert await shard.history.record(A2, "in", complete(inbound))
            await shard.conversations.update(A2, chat, {"pinned": True}, pending_at=time.time())
        # One chat's is refused twice and taken at the third send; the other's, always.
        backend.refusals = {CHAT: 2, other: 99}
        await sessions.connect(A2)
        assert await backend.scan(A2)

        def pending() -> list[tuple[Any, ...]]:
            return rows(tmp_path, "SELECT chat_id, sent, attempts FROM chat_settings_set")

        async def settled() -> list[tuple[Any, ...]] | None:
            return pending() if "wa_chat_settings_failed" in stream.getvalue() else None

        assert await eventually_async(settled, "the last attempt") == [(CHAT, 1, 2)]
        assert (await backend.phone_settings(A2))[CHAT]["pinned"] is True
        assert other not in await backend.phone_settings(A2)
        events = [line for line in stream.getvalue().splitlines() if "wa_chat_settings" in line]
        assert sum('"wa_chat_settings_retry"' in line for line in events) == 4
        assert sum('"wa_chat_settings_failed"' in line for line in events) == 1
        assert '"attempts": 3' in next(e for e in events if "wa_chat_settings_failed" in e)
    finally:
        await sender.close()
        await backend.close()
        shard.close()


async def test_a_patch_sent_at_once_is_marked_sent_and_a_refused_one_is_not_kept(
    tmp_path: Path,
) -> None:
    log = EventLog(stream=io.StringIO())
    shard = ShardStore.in_folder(tmp_path)
    backend = FlakySimulator(tmp_path, owner="test")
    sessions = SessionManager(config(tmp_path), backend, log)
    sender = SettingsSender(PendingSettings(shard.db), sessions, log)
    backend.before_settings_read = sender.flush
    try:
        inbound = {"slot": "A2", "wa_message_id": "M1", "chat_id": CHAT, "from": CHAT}
        assert await shard.history.record(A2, "in", complete(inbound))
        await sessions.connect(A2)
        assert await backend.scan(A2)
        backend.refusals = {CHAT: 1}
        for body, told in (({"archived": True}, "failed"), ({"pinned": True}, "sent")):
            at = time.time()
            await shard.conversations.update(A2, CHAT, body, pending_at=at)
            assert await sender.patched(A2, CHAT, body, at, None) == told
        assert rows(tmp_path, "SELECT field, sent FROM chat_settings_set") == [("pinned", 1)]
        assert await sender.patched(A2, CHAT, {"tags": ["x"]}, None, None) is None
    finally:
        await sender.close()
        await backend.close()
        shard.close()


@pytest.mark.parametrize("how", ["logout", "unlinked on the phone"])
async def test_settings_kept_for_an_account_that_goes_never_reach_the_next_one(
    tmp_path: Path, how: str
) -> None:
    """A setting waits for A2's WhatsApp, and A2's account goes (logged out here, or the
    device unlinked on the phone): it was that account's, so it is dropped (the connect of
    whichever account is linked to the slot next sends only what is recorded)."""
    store = tmp_path / "data"
    async with worker_at(tmp_path, tmp_path / "whatsapp") as worker:
        await login(worker, "A1")
        await login(worker, "A2")
        await arrived(store, A2, await send(worker, "hi"))
        assert (await worker.post("/api/accounts/A2/logout")).status == 200
        assert (await worker.post("/api/accounts/A2/connect")).status == 200  # a QR, no login
        assert (await patch(worker, {"archived": True}))["whatsapp"] == "pending"
        assert rows(store, PENDING_SQL) == [("archived", 1.0, 0)]
        if how == "logout":
            assert (await worker.post("/api/accounts/A2/logout")).status == 200
        else:
            report = simulator(worker).sessions[A2].on_status  # the backend's own callback
            await report(StatusEvent(A2, "DISCONNECTED", reason="logged_out", logged_out=True))
        assert rows(store, PENDING_SQL) == []  # nothing left for the connect's flush to send
        events = [e["event"] for e in worker.app[LOG].recent()]
        assert "wa_chat_settings_dropped" in events
