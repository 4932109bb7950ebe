"""The neonize backend and the chat settings set while a session was away, offline: the
cell (a recording pipe end, as in `test_neonize_status`) gets their app-state patches
before its read of whatsmeow's record at the connect, and that record, which keeps no
time, does not undo a pending one; once sent, it is read back as any."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

from wasp_worker.backends.cell_protocol import (
    ChatSetting,
    ChatSettingsResult,
    ChatSettingsSeen,
    Command,
    Connected,
    OfflineSyncCompleted,
    ReadChatSettings,
    SetChatSettings,
)
from wasp_worker.contacts import Contacts
from wasp_worker.events import EventLog
from wasp_worker.history import complete
from wasp_worker.pending_settings import PendingSettings
from wasp_worker.remote_changes import RemoteChanges
from wasp_worker.sessions import SessionManager, SessionState
from wasp_worker.settings_sender import SettingsSender
from wasp_worker.store import ShardStore

from tests.support.waiting import eventually_async
from tests.worker.test_neonize_status import A1, setup
from tests.worker.test_worker_http import config

CHAT = "5511999999999@s.whatsapp.net"


async def test_pending_settings_go_before_the_read_and_win_over_it_once(tmp_path: Path) -> None:
    backend, _, conn = setup(tmp_path, connected=False)
    shard = ShardStore.in_folder(tmp_path / "db")
    log = EventLog(stream=io.StringIO())
    sessions = SessionManager(config(tmp_path), backend, log)
    sessions.states[A1] = SessionState()
    backend.sessions[A1].on_status = sessions._on_status
    sender = SettingsSender(PendingSettings(shard.db), sessions, log, retry_s=60)
    remote = RemoteChanges(
        shard.db, shard.history, shard.conversations, Contacts(shard.db), sessions, log
    )
    backend.on_remote, backend.known_chats = remote.apply, remote.known_chats
    backend.before_settings_read = sender.flush
    inbound = {"slot": "A1", "wa_message_id": "M1", "chat_id": CHAT, "from": CHAT}
    assert await shard.history.record(A1, "in", complete(inbound))
    await shard.conversations.update(A1, CHAT, {"pinned": True}, pending_at=time.time())
    refuse = [True]  # WhatsApp refuses the first patch, takes the next

    def answer(command: Command) -> None:
        if isinstance(command, SetChatSettings):
            ok = not refuse.pop() if refuse else True
            result = ChatSettingsResult(command.request_id, ok, "" if ok else "app_state_error")
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, backend.handle(result))

    conn.answer = answer

    def kinds() -> list[str]:
        return [type(c).__name__ for c in conn.commands]

    def stored() -> list[tuple[Any, ...]]:
        db = sqlite3.connect(tmp_path / "db" / "queue.sqlite3")
        try:
            return db.execute(
                "SELECT c.pinned, s.sent FROM conversations c JOIN chat_settings_set s "
                "USING (slot, chat_id)"
            ).fetchall()
        finally:
            db.close()

    async def read(count: int) -> bool:
        return kinds().count("ReadChatSettings") >= count

    whatsmeow = ChatSettingsSeen("A1", (ChatSetting(CHAT, False, False, None),))
    try:
        await backend.handle(Connected("A1"))
        await eventually_async(lambda: read(1), "the read at the connect")
        assert kinds() == ["SetChatSettings", "ReadChatSettings"]
        patch = conn.commands[0]
        assert isinstance(patch, SetChatSettings)
        sent = (patch.chat_id, patch.pinned, patch.archived, patch.mute)
        assert sent == (CHAT, True, None, False)
        assert conn.commands[1] == ReadChatSettings("A1", (CHAT,))
        # Refused: still pending, and whatsmeow's record (unpinned, no time) does not undo it.
        await backend.handle(whatsmeow)
        assert stored() == [(1, 0)]

        # The read after the offline sync sends it first again; taken, it won once: from
        # now on whatsmeow's record is read back as any.
        await backend.handle(OfflineSyncCompleted("A1"))
        await eventually_async(lambda: read(2), "the read after the offline sync")
        assert kinds()[2:] == ["SetChatSettings", "ReadChatSettings"]
        assert stored() == [(1, 1)]
        await backend.handle(whatsmeow)
        got = await shard.conversations.get(A1, CHAT)
        assert got is not None
        assert got["pinned"] is False
    finally:
        await sender.close()
        await backend.close()
        shard.close()
