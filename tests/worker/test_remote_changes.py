"""Edits, deletes for everyone, history syncs and chat settings reaching a worker's store from
WhatsApp, end to end through the simulator's server (real worker app, real SQLite), and
the chat settings set here reaching the account's phone."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.backends.base import ChatSettingsChange
from wasp_worker.backends.simulator import SimulatorBackend, jid_of, lid_of, phone_of
from wasp_worker.events import EventLog
from wasp_worker.sessions import SessionManager
from wasp_worker.state import SESSIONS

from tests.support.waiting import eventually_async
from tests.support.worker import CREDENTIAL
from tests.worker.test_outbound import login
from tests.worker.test_sending import FakeBackend
from tests.worker.test_worker_http import config
from wasp.slots import Slot

Client = TestClient[Any, Any]
A1, A2 = Slot.parse("A1"), Slot.parse("A2")


def simulator(worker: Client) -> SimulatorBackend:
    backend = worker.app[SESSIONS].backend
    assert isinstance(backend, SimulatorBackend)
    return backend


def rows(work_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(work_dir / "queue.sqlite3")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def send(worker: Client, text: str, sender: str = "A1", to: Slot = A2) -> str:
    sent = await worker.post(
        f"/api/accounts/{sender}/send", json={"to": phone_of(to), "text": text}
    )
    assert sent.status in (200, 202), await sent.text()
    return str((await sent.json())["message"]["waMessageId"])


async def arrived(work_dir: Path, slot: Slot, message_id: str) -> None:
    async def there() -> bool:
        return bool(
            rows(
                work_dir,
                "SELECT 1 FROM messages WHERE slot=? AND wa_message_id=?",
                str(slot),
                message_id,
            )
        )

    await eventually_async(there, f"{message_id} in {slot}'s store")


async def test_a_peer_s_edit_and_delete_for_everyone_reach_the_recipient_s_store(
    worker: Client, tmp_path: Path
) -> None:
    work_dir = tmp_path / "data"
    await login(worker, "A1")
    await login(worker, "A2")
    first, second = await send(worker, "see you at 10"), await send(worker, "bring the keys")
    await arrived(work_dir, A2, first)
    await arrived(work_dir, A2, second)
    since = (await (await worker.get("/api/accounts/A2/sync")).json())["next"]

    backend = simulator(worker)
    assert await backend.edit(A1, first, "see you at 11")
    assert await backend.revoke(A1, second)
    # Only the sender may: A2 never sent these.
    assert not await backend.edit(A2, first, "hijacked")
    assert not await backend.revoke(A2, first)

    def state(message_id: str) -> tuple[Any, ...]:
        return rows(
            work_dir,
            "SELECT body, edited_at IS NOT NULL, deleted_at IS NOT NULL FROM messages "
            "WHERE slot='A2' AND wa_message_id=?",
            message_id,
        )[0]

    async def changed() -> bool:
        return state(first) == ("see you at 11", 1, 0) and state(second) == ("", 0, 1)

    await eventually_async(changed, "the edit and the delete in A2's store")
    # Incremental sync reports both messages changed.
    page = await (await worker.get("/api/accounts/A2/sync", params={"since": since})).json()
    synced = {m["wa_message_id"]: m for m in page["messages"]}
    assert synced[first]["body"] == "see you at 11"
    assert synced[second]["deleted_at"] is not None

    # The sender's phone made the change: its linked device (this worker, for A1) has it too.
    def sent(message_id: str) -> tuple[Any, ...]:
        return rows(
            work_dir,
            "SELECT body, deleted_at IS NOT NULL FROM messages WHERE slot='A1' AND wa_message_id=?",
            message_id,
        )[0]

    async def mirrored() -> bool:
        return sent(first) == ("see you at 11", 0) and sent(second) == ("", 1)

    await eventually_async(mirrored, "the edit and the delete in A1's own store")


async def test_a_relinked_account_gets_its_history_back_with_its_chats_and_contacts(
    tmp_path: Path,
) -> None:
    server = tmp_path / "whatsapp"
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"

    def worker_at(folder: Path) -> Client:
        settings = config(
            folder,
            work_dir=folder / "data",
            simulator_server_dir=server,
            pacing_recipient_burst=10,  # the test's messages leave at once
        )
        return TestClient(
            TestServer(build_app(settings, EventLog(stream=io.StringIO()))), headers=CREDENTIAL
        )

    async with worker_at(first_dir) as first:
        await login(first, "A1")
        await login(first, "A2")
        hello = await send(first, "hello A2")
        back = await send(first, "hello back", sender="A2", to=A1)
        later = await send(first, "one more")
        await arrived(first_dir / "data", A2, later)
        await arrived(first_dir / "data", A1, back)
        # A2 reads the first message on its phone... (here: opens the chat, then gets one more)
        opened = await first.post("/api/accounts/A2/openChat", json={"chat_id": jid_of(A1)})
        assert opened.status == 200
        last = await send(first, "unread one")
        await arrived(first_dir / "data", A2, last)
        await simulator(first).phone_sets(A2, jid_of(A1), ChatSettingsChange(pinned=True))
        await first.post("/api/accounts/A2/logout")

    async with worker_at(second_dir) as second:
        store = second_dir / "data"
        assert rows(store, "SELECT count(*) FROM messages") == [(0,)]
        await login(second, "A2")  # a new device: the phone sends the history

        async def synced() -> bool:
            return len(rows(store, "SELECT 1 FROM messages WHERE slot='A2'")) == 4

        await eventually_async(synced, "A2's history on the new device")
        messages = rows(
            store,
            "SELECT wa_message_id, direction, body, read FROM messages WHERE slot='A2' ORDER BY id",
        )
        assert {m[0]: m[1:] for m in messages} == {
            hello: ("in", "hello A2", 1),
            back: ("out", "hello back", 1),
            later: ("in", "one more", 1),
            last: ("in", "unread one", 0),
        }
        ((pinned, unread),) = rows(
            store,
            "SELECT pinned, unread FROM conversations WHERE slot='A2' AND chat_id=?",
            jid_of(A1),
        )
        assert (pinned, unread) == (1, 1)
        assert rows(store, "SELECT phone_jid, lid FROM contacts WHERE slot='A2'") == [
            (jid_of(A1), lid_of(A1))
        ]
        # History is not news: no message.received webhook event for it.
        assert rows(store, "SELECT count(*) FROM outbox WHERE type='message.received'") == [(0,)]


async def test_chat_settings_go_to_the_phone_and_come_back_from_it(
    worker: Client, tmp_path: Path
) -> None:
    await login(worker, "A1")
    await login(worker, "A2")
    await arrived(tmp_path / "data", A2, await send(worker, "hi"))
    sessions, backend = worker.app[SESSIONS], simulator(worker)
    chat = jid_of(A1)

    # Set through the API: the store has it and the phone shows it.
    settings = {"pinned": True, "muted_until": 2e9}
    patched = await worker.patch(f"/api/accounts/A2/conversations/{chat}", json=settings)
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["whatsapp"] == "sent"
    phone = await backend.phone_settings(A2)
    assert phone[chat] == {"pinned": True, "archived": False, "muted_until": 2e9}
    tagged = await worker.patch(f"/api/accounts/A2/conversations/{chat}", json={"tags": ["x"]})
    assert (await tagged.json())["whatsapp"] is None
    assert await sessions.send_chat_settings(A2, chat, {"tags": ["vip"]}) is None
    assert await sessions.send_chat_settings(A3, chat, {"pinned": True}) == "not_connected"

    # Set on the phone: the worker's conversation follows.
    await backend.phone_sets(A2, chat, ChatSettingsChange(archived=True, mute=True))

    async def followed() -> dict[str, Any] | None:
        got = await worker.get(f"/api/accounts/A2/conversations/{chat}")
        found = (await got.json())["conversation"]
        return found if found["archived"] and found["muted_until"] is None else None

    conversation = await eventually_async(followed, "the phone's archive and unmute")
    assert conversation["pinned"] is True  # left as it was


A3 = Slot.parse("A3")


class RefusingSimulator(SimulatorBackend):
    """WhatsApp refusing a patch: a fault the simulator's server never produces."""

    async def send_chat_settings(
        self, slot: Slot, chat_id: str, change: ChatSettingsChange, last_message_at: float | None
    ) -> None:
        raise RuntimeError("app_state_error: refused")


async def test_a_refusal_is_failed_and_logged_and_a_backend_without_settings_is_unsupported(
    tmp_path: Path,
) -> None:
    stream = io.StringIO()
    refusing = RefusingSimulator(tmp_path, owner="test")
    sessions = SessionManager(config(tmp_path), refusing, EventLog(stream=stream))
    try:
        await sessions.connect(A1)
        assert await refusing.scan(A1)
        assert await sessions.send_chat_settings(A1, jid_of(A2), {"archived": True}) == "failed"
        assert '"reason": "app_state_error: refused"' in stream.getvalue()
    finally:
        await refusing.close()
    plain = SessionManager(config(tmp_path), FakeBackend(), EventLog(stream=io.StringIO()))
    assert await plain.send_chat_settings(A1, jid_of(A2), {"pinned": True}) == "unsupported"
