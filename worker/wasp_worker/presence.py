"""Typing and recording: what the agent's chats' peers show, and what the account shows.

WhatsApp sends a chat's presence only to a client that asked for it, and only for
the connection it asked on. So the worker subscribes to a direct chat's presence
when the agent opens it (openChat, or the chat's messages page), and again after
every (re)connect for the chats opened in the last `window_s` (10 minutes): an
agent who left a chat long ago does not need it. A group's presence needs no
subscription (WhatsApp sends it to members), so only direct chats are subscribed.

What the peers show reaches the live feed as `wa:presence` {slot, chat_id, sender,
state, at}: live only, never stored, no webhook (it is stale in seconds). What
the account shows (`send`) goes to WhatsApp at once, never queued.
Logs name slots and chats, never message content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasp.slots import Slot
from wasp_worker.backends.base import ChatPresence, PresenceEvent, PresenceState
from wasp_worker.errors import Conflict, WorkerError
from wasp_worker.events import EventLog
from wasp_worker.sessions import SessionManager

WINDOW_S = 600.0  # chats opened this recently are subscribed again after a reconnect
REPEAT_S = 60.0  # a chat opened again within this on the same connection: asked already
MAX_REMEMBERED = 10_000  # opened chats kept before the old ones are dropped


class Unsupported(WorkerError):
    status = 501


@dataclass
class PresenceWatch:
    sessions: SessionManager
    log: EventLog
    emit: Callable[[str, dict[str, Any]], None]
    window_s: float = WINDOW_S
    clock: Callable[[], float] = time.monotonic
    # (slot, chat) -> when the agent last opened it, and when it was last subscribed on the
    # session's current connection (cleared at each connect).
    opened: dict[tuple[Slot, str], float] = field(default_factory=dict)
    subscribed: dict[tuple[Slot, str], float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _backend(self) -> ChatPresence | None:
        backend = self.sessions.backend
        return backend if isinstance(backend, ChatPresence) else None

    def _connected(self, slot: Slot) -> bool:
        state = self.sessions.states.get(slot)
        return state is not None and state.status == "CONNECTED"

    def chat_opened(self, slot: Slot, chat_id: str) -> None:
        """The agent opened a chat: subscribe to its presence in the background (the
        answer does not wait for WhatsApp)."""
        if chat_id.endswith("@g.us") or self._backend() is None:
            return
        now = self.clock()
        if len(self.opened) > MAX_REMEMBERED:  # a connection that lasts for days
            self._forget(now)
        self.opened[(slot, chat_id)] = now
        last = self.subscribed.get((slot, chat_id))
        if last is not None and now - last < REPEAT_S:
            return
        self._spawn(self._subscribe(slot, [chat_id]))

    def listen(self, name: str, payload: dict[str, Any]) -> None:
        """A live-feed listener: a session that (re)connected is subscribed again to the
        chats opened within the window (the subscriptions ended with the old connection)."""
        if name != "wa:status":
            return
        slot = Slot.parse(str(payload["slot"]))
        for key in [key for key in self.subscribed if key[0] == slot]:
            del self.subscribed[key]
        if payload.get("status") != "CONNECTED":
            return
        self._forget(self.clock())
        recent = [chat for (owner, chat) in self.opened if owner == slot]
        if recent:
            self._spawn(self._subscribe(slot, recent))

    def _forget(self, now: float) -> None:
        """Drop the chats opened before the window: the agent left them long ago."""
        horizon = now - self.window_s
        for key in [key for key, at in self.opened.items() if at < horizon]:
            del self.opened[key]

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)  # held until done: a bare task may be collected mid-way
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self, slot: Slot, chats: list[str]) -> None:
        backend = self._backend()
        if backend is None or not self._connected(slot):
            return  # the next connect subscribes them
        for chat_id in chats:
            try:
                await backend.subscribe_presence(slot, chat_id)
            except Exception as error:
                reason = str(error) if isinstance(error, RuntimeError) else type(error).__name__
                self.log.emit(
                    "presence_subscribe_failed", slot=str(slot), chat_id=chat_id, reason=reason
                )
                continue
            self.subscribed[(slot, chat_id)] = self.clock()
            self.log.emit("presence_subscribed", slot=str(slot), chat_id=chat_id)

    async def seen(self, event: PresenceEvent) -> None:
        """A peer's presence (the backend's `on_presence`): to the live feed only."""
        self.emit(
            "wa:presence",
            {
                "slot": str(event.slot),
                "chat_id": event.chat_id,
                "sender": event.sender,
                "state": event.state,
                "at": event.at,
            },
        )

    async def send(self, slot: Slot, chat_id: str, state: PresenceState) -> None:
        """Show the account's presence in a chat now: 501 when the backend cannot, 409 when
        the session is not connected or WhatsApp did not take it (with the reason)."""
        backend = self._backend()
        if backend is None:
            name = type(self.sessions.backend).__name__
            raise Unsupported(f"presence: not supported by the {name}")
        if not self._connected(slot):
            raise Conflict(f"presence needs the session connected; slot {slot} is not")
        try:
            await backend.send_presence(slot, chat_id, state)
        except RuntimeError as error:
            raise Conflict(f"presence: {error}") from None
        self.log.emit("presence_sent", slot=str(slot), chat_id=chat_id, state=state)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
