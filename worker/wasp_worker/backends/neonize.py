"""Real WhatsApp through neonize, with sessions in supervised child processes ("cells").

The worker never imports neonize: each cell (`neonize_cell.run_cell`) holds up
to `sessions_per_cell` sessions, and a cell that dies (a Go abort, SIGKILL) is
restarted with its sessions started again from their stores, so a logged-in
account comes back without a new QR while the worker's API keeps answering.

Per session: auth state in SQLite at `WORKDIR/auth/<slot>/session.sqlite3`;
reconnect after 2, 5, 10, 20, 40, 60 s (reset once connected); the auth is
wiped when WhatsApp logs the device out or ends the stream with 515, and by
the Bad MAC breaker (`wasp_worker.breaker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from wasp.slots import Slot
from wasp_worker.backends.base import (
    OnInbound,
    OnReceipt,
    OnStatus,
    Outgoing,
    PairFailed,
    SendFailed,
    StatusEvent,
)
from wasp_worker.backends.neonize_cell import run_cell
from wasp_worker.breaker import BadMacBreaker, BreakerSettings
from wasp_worker.qr import qr_data_url

BACKOFF_S = (2, 5, 10, 20, 40, 60)
SEND_TIMEOUT_S = 60.0
MAX_MEDIA_BYTES = 64 << 20
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=60)
WIPE_REASONS = {"logged_out", "stream_error_515"}

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Cell:
    index: int
    process: Any
    conn: Connection
    restarts: int = 0

    def send(self, *command: Any) -> None:
        # A dead cell: its reader reports it and the supervisor restarts it.
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(command)


@dataclass
class _Session:
    on_status: OnStatus
    breaker: BadMacBreaker
    failures: int = 0
    retry: asyncio.Task[None] | None = None
    connected: bool = False
    cooling: bool = False  # the Bad MAC breaker tripped: no retry before the cooldown


@dataclass
class NeonizeBackend:
    work_dir: Path
    sessions_per_cell: int = 25
    sleep: Sleep = asyncio.sleep  # injected: tests drive the backoff without waiting
    now: Callable[[], float] = time.monotonic
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    on_inbound: OnInbound | None = None
    on_receipt: OnReceipt | None = None
    cells: dict[int, Cell] = field(default_factory=dict)
    sessions: dict[Slot, _Session] = field(default_factory=dict)
    placement: dict[Slot, int] = field(default_factory=dict)
    _events: asyncio.Queue[tuple[Any, ...]] | None = None
    _pending: dict[int, tuple[int, asyncio.Future[tuple[Any, Any]]]] = field(default_factory=dict)
    _requests: int = 0
    reconnects: int = 0  # connects retried after a failure or a drop (for /metrics)
    breaker_trips: int = 0
    _dispatcher: asyncio.Task[None] | None = None

    def auth_dir(self, slot: Slot) -> Path:
        return self.work_dir / "auth" / str(slot)

    # -- cells --------------------------------------------------------------

    def _spawn(self, index: int) -> Cell:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=run_cell, args=(child,), daemon=True, name=f"wasp-cell-{index}"
        )
        process.start()
        child.close()
        cell = Cell(index, process, parent)
        loop = asyncio.get_running_loop()
        events = self._events
        assert events is not None

        def read() -> None:  # one thread per cell: Connection.recv blocks
            while True:
                try:
                    event: tuple[Any, ...] = parent.recv()
                except (EOFError, OSError):
                    event = ("cell_died", index, process)
                try:
                    loop.call_soon_threadsafe(events.put_nowait, event)
                except RuntimeError:
                    return  # the worker's loop is gone: shutting down
                if event[0] == "cell_died":
                    return

        threading.Thread(target=read, daemon=True, name=f"cell-reader-{index}").start()
        return cell

    def _cell_for(self, slot: Slot) -> Cell:
        if self._events is None:
            self._events = asyncio.Queue()
            self._dispatcher = asyncio.create_task(self._dispatch())
        index = self.placement.get(slot)
        if index is None:
            load = {i: 0 for i in self.cells}
            for placed in self.placement.values():
                load[placed] = load.get(placed, 0) + 1
            free = [i for i, n in sorted(load.items()) if n < self.sessions_per_cell]
            index = free[0] if free else len(self.cells)
            self.placement[slot] = index
        if index not in self.cells:
            self.cells[index] = self._spawn(index)
        return self.cells[index]

    # -- Backend ------------------------------------------------------------

    async def start(self, slot: Slot, on_status: OnStatus) -> None:
        self.sessions[slot] = _Session(on_status, BadMacBreaker(self.breaker))
        await self._connect(slot)

    async def _connect(self, slot: Slot) -> None:
        session = self.sessions.get(slot)
        if session is None:
            return
        auth = self.auth_dir(slot)
        auth.mkdir(parents=True, exist_ok=True)
        self._cell_for(slot).send(
            "start", str(slot), str(auth / "session.sqlite3"), str(self.work_dir)
        )
        await session.on_status(StatusEvent(slot, "CONNECTING"))

    async def stop(self, slot: Slot) -> None:
        session = self.sessions.pop(slot, None)
        if session is None:
            return
        if session.retry is not None:
            session.retry.cancel()
        index = self.placement.pop(slot, None)
        if index is not None and index in self.cells:
            self.cells[index].send("stop", str(slot))
        await session.on_status(StatusEvent(slot, "DISCONNECTED", reason="stopped"))

    async def logout(self, slot: Slot) -> None:
        await self.stop(slot)
        shutil.rmtree(self.auth_dir(slot), ignore_errors=True)

    async def send(self, slot: Slot, message: Outgoing) -> None:
        """Send through the slot's cell. A transient problem raises RuntimeError (the
        message stays queued); a final one raises SendFailed with the reason."""
        index = self.placement.get(slot)
        if index is None or index not in self.cells or slot not in self.sessions:
            raise RuntimeError("no session")
        data = None
        if message.kind != "text":
            data = await self._download(message.media_url or "")
        outcome, detail = await self._ask(
            index,
            "send",
            str(slot),
            message.destination,
            message.kind,
            message.body,
            data,
            message.file_name,
            None,
        )
        if outcome == "failed":
            raise SendFailed(detail)
        if outcome == "retry":
            raise RuntimeError(detail)

    async def pair(self, slot: Slot, phone: str) -> str:
        index = self.placement.get(slot)
        if index is None or index not in self.cells or slot not in self.sessions:
            raise PairFailed(f"slot {slot} is not logging in: connect it first")
        ok, detail = await self._ask(index, "pair", str(slot), phone)
        if ok is not True:
            raise PairFailed(str(detail))
        return str(detail)

    async def phone_for_lid(self, slot: Slot, lid: str) -> str | None:
        raise RuntimeError("LID lookups through the cell: not wired yet")

    async def mark_read(
        self, slot: Slot, chat_id: str, sender: str | None, message_ids: list[str]
    ) -> None:
        raise NotImplementedError("read receipts through the cell: not wired yet")

    async def _ask(self, index: int, kind: str, *args: Any) -> tuple[Any, Any]:
        """One request to a cell and its answer (or a retryable error if the cell dies)."""
        self._requests += 1
        request_id = self._requests
        reply: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (index, reply)
        self.cells[index].send(kind, request_id, *args)
        try:
            return await asyncio.wait_for(reply, SEND_TIMEOUT_S)
        finally:
            self._pending.pop(request_id, None)

    async def _download(self, url: str) -> bytes:
        """Media is fetched here and handed to the cell as bytes (neonize would fetch URLs
        itself without a timeout)."""
        try:
            async with aiohttp.ClientSession(timeout=MEDIA_TIMEOUT) as http, http.get(url) as got:
                if got.status != 200:
                    raise SendFailed(f"media_download_failed: HTTP {got.status}")
                data = await got.content.read(MAX_MEDIA_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError):
            raise SendFailed("media_download_failed") from None
        if len(data) > MAX_MEDIA_BYTES:
            raise SendFailed("media_too_large")
        return data

    async def close(self) -> None:
        for slot in list(self.sessions):
            await self.stop(slot)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for cell in self.cells.values():
            cell.conn.close()
            cell.process.kill()
            cell.process.join(5)
        self.cells.clear()

    # -- events -------------------------------------------------------------

    async def _dispatch(self) -> None:
        assert self._events is not None
        while True:
            event = await self._events.get()
            await self.handle(event)

    async def handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "cell_died":
            for index, reply in list(self._pending.values()):
                if index == event[1] and not reply.done():
                    reply.set_result(("retry", "cell_died"))
            await self._restart_cell(event[1], event[2])
            return
        if kind in ("send_result", "pair_result"):
            pending = self._pending.get(event[1])
            if pending is not None and not pending[1].done():
                pending[1].set_result((event[2], event[3]))
            return
        slot = Slot.parse(event[1])
        session = self.sessions.get(slot)
        if session is None:
            return
        if kind == "qr":
            await session.on_status(StatusEvent(slot, "CONNECTING", qr=qr_data_url(event[2])))
        elif kind == "connected":
            session.failures, session.connected = 0, True
            await session.on_status(StatusEvent(slot, "CONNECTED"))
        elif kind == "disconnected":
            # whatsmeow reconnects by itself and says `connected` again; if its connect loop
            # gives up instead, `ended` follows and the backoff takes over.
            session.connected = False
            await session.on_status(StatusEvent(slot, "DISCONNECTED", reason=str(event[2])))
        elif kind in ("logged_out", "stream_error"):
            reason = "logged_out" if kind == "logged_out" else f"stream_error_{event[2]}"
            wiped = reason in WIPE_REASONS
            if wiped:
                shutil.rmtree(self.auth_dir(slot), ignore_errors=True)
            await session.on_status(
                StatusEvent(slot, "DISCONNECTED", reason=reason, logged_out=wiped)
            )
        elif kind == "message":
            if self.on_inbound is not None:
                await self.on_inbound(dict(event[2]))
        elif kind == "undecryptable":
            if session.breaker.record(self.now()):
                await self._trip(slot, session)
        elif kind == "ended":
            session.connected = False
            if session.cooling:
                return  # the breaker already reported it and owns the next connect
            await session.on_status(StatusEvent(slot, "DISCONNECTED", reason=str(event[2])))
            self._schedule_retry(slot, session)

    async def _trip(self, slot: Slot, session: _Session) -> None:
        """Too many decrypt failures: drop the session, wipe its auth, come back with a new QR
        after the cooldown."""
        session.cooling, session.connected = True, False
        self.breaker_trips += 1
        if session.retry is not None:
            session.retry.cancel()
        index = self.placement.get(slot)
        if index is not None and index in self.cells:
            self.cells[index].send("stop", str(slot))
        shutil.rmtree(self.auth_dir(slot), ignore_errors=True)
        await session.on_status(
            StatusEvent(slot, "DISCONNECTED", reason="bad_mac_breaker", logged_out=True)
        )

        async def after_cooldown() -> None:
            await self.sleep(self.breaker.cooldown_s)
            if self.sessions.get(slot) is session:
                session.cooling, session.failures = False, 0
                await self._connect(slot)

        session.retry = asyncio.create_task(after_cooldown())

    def _schedule_retry(self, slot: Slot, session: _Session) -> None:
        delay = BACKOFF_S[min(session.failures, len(BACKOFF_S) - 1)]
        session.failures += 1

        async def retry() -> None:
            await self.sleep(delay)
            if self.sessions.get(slot) is session:
                self.reconnects += 1
                await self._connect(slot)

        session.retry = asyncio.create_task(retry())

    async def _restart_cell(self, index: int, process: Any) -> None:
        cell = self.cells.get(index)
        if cell is None or cell.process is not process:
            return  # already replaced, or closed on purpose
        restarts = cell.restarts + 1
        await asyncio.to_thread(process.join, 5)
        self.cells[index] = self._spawn(index)
        self.cells[index].restarts = restarts
        for slot, placed in list(self.placement.items()):
            if placed == index and slot in self.sessions:
                await self._connect(slot)  # resumes from the store: no new QR if logged in
