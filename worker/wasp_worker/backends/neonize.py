"""Real WhatsApp through neonize, with sessions in supervised child processes ("cells").

The worker never imports neonize: each cell (`neonize_cell.run_cell`) holds up
to `sessions_per_cell` sessions, and a cell that dies (a Go abort, SIGKILL) is
restarted with its sessions started again from their stores, so a logged-in
account comes back without a new QR while the worker's API keeps answering.
Cell and worker speak `cell_protocol`; `NeonizeBackend.handle` has one branch
per event kind.

Per session: auth state in SQLite at `WORKDIR/auth/<slot>/session.sqlite3`;
reconnect after 2, 5, 10, 20, 40, 60 s (reset once connected). Status reasons
are whatsmeow's own events:

- logged out (or a connect failure of the logout class: 401, 403, 406), stream
  error 515, the Bad MAC breaker (`wasp_worker.breaker`): auth wiped,
  `logged_out`; only a new login helps (the breaker's cooldown brings a new QR);
- stream replaced: another client uses these keys; never reconnected by us,
  since that would fight it in a loop;
- temporary ban: reconnected only once the ban expires (an hour when WhatsApp
  gives no expiry);
- connect failure: 500/503 are reconnected by whatsmeow itself, others by our
  backoff; client outdated: not reconnected;
- keep-alive timeout: still CONNECTED with reason `keepalive_timeout`, because
  whatsmeow keeps the socket, says `KeepAliveRestored` when pings answer again,
  and forces a reconnect itself after three minutes without answers.

A slot whose account names a proxy (`proxies`, `wasp.proxies`) connects through
it alone. When such a connect fails, one TCP connect to the proxy tells the
proxy's fault from WhatsApp's: `proxy_unreachable` (refused, timeout) or
`proxy_auth_refused` (the proxy answered 407), detail `{"proxy": "host:port"}`
and never its credentials; the backoff above bounds the retries. A proxy that
is not a valid URL holds the session with `proxy_invalid`: never a direct connect.

Receipts of sent messages go to `on_receipt`; `mark_read` sends read receipts.
Edits, deletes for everyone and history syncs go to `on_remote`, and so do the
chat settings (pin, archive, mute) the phone set: neonize emits no app-state
events, so once a session is connected, again when whatsmeow has delivered
what waited offline, and every `settings_every_s` while connected, the cell
reads whatsmeow's own record of them for the chats the store knows
(`known_chats`). `send_chat_settings` sends the settings
set here as app-state patches; before each read, `before_settings_read` sends those set
while the session was away (whatsmeow's record keeps no time of the phone's changes: the
API's pending value wins once, `pending_settings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar, assert_never

import aiohttp

from wasp.proxies import ProxyTarget
from wasp.slots import Slot
from wasp_worker import outgoing_media
from wasp_worker.backends.base import (
    ACTIONS,
    CONTENT_KINDS,
    OPTION_HASH_PREFIX,
    ChatSettingsChange,
    HistoryImport,
    KnownChats,
    MessageEdit,
    MessageReaction,
    MessageRevoke,
    OnInbound,
    OnPresence,
    OnReceipt,
    OnRemote,
    OnStatus,
    Outgoing,
    PairFailed,
    PollVote,
    PresenceEvent,
    PresenceState,
    ReceiptEvent,
    RemoteChatSettings,
    SendFailed,
    SendKind,
    StatusEvent,
)
from wasp_worker.backends.cell_protocol import (
    CellDied,
    ChatSettingsResult,
    ChatSettingsSeen,
    ClientOutdated,
    Command,
    Connected,
    ConnectFailure,
    Disconnected,
    Ended,
    Event,
    GroupsCommand,
    GroupsResult,
    GroupsValue,
    HistorySynced,
    KeepAliveRestored,
    KeepAliveTimeout,
    LoggedOut,
    LookupLid,
    LookupResult,
    MarkRead,
    MarkReadResult,
    Message,
    MessageEdited,
    MessageRevoked,
    OfflineSyncCompleted,
    Pair,
    PairResult,
    PollUpdate,
    PresenceResult,
    PresenceSeen,
    Qr,
    Reaction,
    ReadChatSettings,
    Receipt,
    Reply,
    Send,
    SendPresence,
    SendResult,
    SessionEvent,
    SetChatSettings,
    Start,
    Stop,
    StreamError,
    StreamReplaced,
    SubscribePresence,
    TemporaryBan,
    Undecryptable,
)
from wasp_worker.backends.neonize_cell import run_cell
from wasp_worker.backends.neonize_directory import NeonizeGroups, refusal
from wasp_worker.breaker import BadMacBreaker, BreakerSettings
from wasp_worker.errors import TooLarge, UnsupportedType
from wasp_worker.proxies import ProxyFor, ProxyInvalid, probe
from wasp_worker.qr import qr_data_url

BACKOFF_S = (2, 5, 10, 20, 40, 60)
INBOUND_RETRY_S = (1, 2, 5, 10, 30, 60)  # a message the worker could not store, again after
SEND_TIMEOUT_S = 60.0
BAN_WITHOUT_EXPIRY_S = 3600  # WhatsApp may leave a ban's expiry out: do not knock sooner
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=60)
LOGOUT_CODES = {401, 403, 406}  # the connect failures whatsmeow treats as a logout
RECONNECTING_CODES = {500, 503}  # the connect failures whatsmeow retries itself

Sleep = Callable[[float], Awaitable[None]]
MAX_KNOWN_CHATS = 2000  # the chats whose settings are read at a connect, latest first
R = TypeVar(
    "R",
    SendResult,
    PairResult,
    MarkReadResult,
    LookupResult,
    ChatSettingsResult,
    PresenceResult,
    GroupsResult,
)


class CellGone(RuntimeError):
    """The cell died with a request in flight; the request may be tried again."""


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Cell:
    index: int
    process: Any
    conn: Connection
    restarts: int = 0

    def send(self, command: Command) -> None:
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
    # Why WhatsApp ended the session (logged_out, temporary_ban, ...): its reason stands
    # and the end of the cell's connect changes nothing; only `retry`, if any, reconnects.
    held: str | None = None
    settings_reader: asyncio.Task[None] | None = None  # re-reads the phone's chat settings
    proxy: ProxyTarget | None = None  # the one the last connect went through
    jid: str = ""  # the account's own phone JID, told by the cell at each connect


@dataclass
class NeonizeBackend(NeonizeGroups):
    work_dir: Path
    sessions_per_cell: int = 25
    sleep: Sleep = asyncio.sleep  # injected: tests drive the backoff without waiting
    now: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # for the expiry of a ban, told to clients
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    on_inbound: OnInbound | None = None
    on_receipt: OnReceipt | None = None
    on_remote: OnRemote | None = None
    on_presence: OnPresence | None = None
    sends: frozenset[SendKind] = CONTENT_KINDS | ACTIONS
    known_chats: KnownChats | None = None
    # The worker's: sends the settings the API set while the session was away, before each
    # read of the phone's (a read of whatsmeow's record then finds them).
    before_settings_read: Callable[[Slot], Awaitable[None]] | None = None
    # whatsmeow applies the phone's app-state changes to its store while connected and
    # neonize emits no event for them: read them again this often.
    settings_every_s: float = 300.0
    proxies: ProxyFor | None = None
    cells: dict[int, Cell] = field(default_factory=dict)
    sessions: dict[Slot, _Session] = field(default_factory=dict)
    placement: dict[Slot, int] = field(default_factory=dict)
    _events: asyncio.Queue[Event] | None = None
    _pending: dict[int, tuple[int, asyncio.Future[Reply]]] = field(default_factory=dict)
    _requests: int = 0
    reconnects: int = 0  # connects retried after a failure or a drop (for /metrics)
    inbound_retried: int = 0  # messages stored on a later try
    inbound_lost: int = 0  # messages the worker never could store
    breaker_trips: int = 0
    _dispatcher: asyncio.Task[None] | None = None
    _reads: set[asyncio.Task[None]] = field(default_factory=set)

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
                    event: Event = parent.recv()
                except (EOFError, OSError):
                    event = CellDied(index, process)
                try:
                    loop.call_soon_threadsafe(events.put_nowait, event)
                except RuntimeError:
                    return  # the worker's loop is gone: shutting down
                if isinstance(event, CellDied):
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

    def _tell_cell(self, slot: Slot, command: Command) -> None:
        index = self.placement.get(slot)
        if index is not None and index in self.cells:
            self.cells[index].send(command)

    # -- Backend ------------------------------------------------------------

    async def start(self, slot: Slot, on_status: OnStatus) -> None:
        self.sessions[slot] = _Session(on_status, BadMacBreaker(self.breaker))
        await self._connect(slot)

    async def _connect(self, slot: Slot) -> None:
        session = self.sessions.get(slot)
        if session is None:
            return
        session.held = None
        try:
            proxy = await asyncio.to_thread(self.proxies, slot) if self.proxies else None
        except ProxyInvalid:
            await self._hold(slot, session, "proxy_invalid", None)
            return
        if self.sessions.get(slot) is not session:
            return  # stopped meanwhile
        session.proxy = proxy
        auth = self.auth_dir(slot)
        auth.mkdir(parents=True, exist_ok=True)
        address = proxy.address() if proxy is not None else ""
        self._cell_for(slot).send(
            Start(str(slot), str(auth / "session.sqlite3"), str(self.work_dir), address)
        )
        await session.on_status(StatusEvent(slot, "CONNECTING"))

    async def stop(self, slot: Slot) -> None:
        session = self.sessions.pop(slot, None)
        if session is None:
            return
        if session.retry is not None:
            session.retry.cancel()
        if session.settings_reader is not None:
            session.settings_reader.cancel()
        self._tell_cell(slot, Stop(str(slot)))
        self.placement.pop(slot, None)
        await session.on_status(StatusEvent(slot, "DISCONNECTED", reason="stopped"))

    async def logout(self, slot: Slot) -> None:
        await self.stop(slot)
        shutil.rmtree(self.auth_dir(slot), ignore_errors=True)

    def _live_cell(self, slot: Slot) -> int | None:
        index = self.placement.get(slot)
        if index is None or index not in self.cells or slot not in self.sessions:
            return None
        return index

    async def send(self, slot: Slot, message: Outgoing) -> str | None:
        """Send through the slot's cell; the id WhatsApp knows the message by. A transient
        problem raises RuntimeError (the message stays queued); a final one raises
        SendFailed with the reason."""
        index = self._live_cell(slot)
        if index is None:
            raise RuntimeError("no session")
        details = message.details
        data, mime = None, details.get("mime")
        if details.get("file"):  # uploaded with the message: on this shard's volume
            data = await asyncio.to_thread(outgoing_media.read, self.work_dir, details["file"])
        elif message.media_url:
            data, mime = await self._fetch(message.kind, message.media_url, mime)
        result = await self._ask(
            index,
            lambda request_id: Send(
                request_id,
                str(slot),
                message.destination,
                message.kind,
                message.body,
                data,
                message.file_name,
                mime,
                details,
            ),
            SendResult,
        )
        if result.outcome == "failed":
            raise SendFailed(result.detail)
        if result.outcome == "retry":
            raise RuntimeError(result.detail)
        # neonize's send takes no message id: whatsmeow made one, and receipts, replies and
        # reactions name the message by it.
        return result.detail or None

    async def pair(self, slot: Slot, phone: str) -> str:
        index = self._live_cell(slot)
        if index is None:
            raise PairFailed(f"slot {slot} is not logging in: connect it first")
        try:
            result = await self._ask(
                index, lambda request_id: Pair(request_id, str(slot), phone), PairResult
            )
        except CellGone:
            raise PairFailed("the session's process restarted: try again") from None
        if not result.ok:
            raise PairFailed(result.detail)
        return result.detail

    def account_jid(self, slot: Slot) -> str | None:
        """The account's own phone JID, once a connect told it (None before)."""
        session = self.sessions.get(slot)
        return session.jid or None if session is not None else None

    async def phone_for_lid(self, slot: Slot, lid: str) -> str | None:
        """The phone JID whatsmeow's store has for a LID; RuntimeError when it cannot look."""
        index = self._live_cell(slot)
        session = self.sessions.get(slot)
        if index is None or session is None or not session.connected:
            raise RuntimeError("not_connected")
        try:
            result = await self._ask(
                index, lambda request_id: LookupLid(request_id, str(slot), lid), LookupResult
            )
        except (TimeoutError, CellGone):
            raise RuntimeError("lookup_unanswered") from None
        if not result.ok:
            raise RuntimeError(result.detail)
        return result.detail or None

    async def mark_read(
        self, slot: Slot, chat_id: str, sender: str | None, message_ids: list[str]
    ) -> None:
        """Read receipts through the slot's cell; RuntimeError says why none went out."""
        index = self._live_cell(slot)
        session = self.sessions.get(slot)
        if index is None or session is None or not session.connected:
            raise RuntimeError("not_connected")
        if sender is None and chat_id.endswith("@g.us"):
            raise RuntimeError("a group's read receipt needs the messages' sender")
        ids = tuple(message_ids)
        try:
            result = await self._ask(
                index,
                lambda request_id: MarkRead(request_id, str(slot), chat_id, sender, ids),
                MarkReadResult,
            )
        except TimeoutError:
            raise RuntimeError("mark_read_timeout") from None
        if not result.ok:
            raise RuntimeError(result.detail)

    async def send_chat_settings(
        self, slot: Slot, chat_id: str, change: ChatSettingsChange, last_message_at: float | None
    ) -> None:
        """App-state patches through the slot's cell; RuntimeError says why none went out."""
        index = self._live_cell(slot)
        session = self.sessions.get(slot)
        if index is None or session is None or not session.connected:
            raise RuntimeError("not_connected")
        try:
            result = await self._ask(
                index,
                lambda request_id: SetChatSettings(
                    request_id,
                    str(slot),
                    chat_id,
                    change.pinned,
                    change.archived,
                    change.mute,
                    change.muted_until,
                    last_message_at,
                ),
                ChatSettingsResult,
            )
        except (TimeoutError, CellGone):
            raise RuntimeError("app_state_unanswered") from None
        if not result.ok:
            raise RuntimeError(result.detail)

    async def _presence_request(self, slot: Slot, make: Callable[[int], Command]) -> None:
        """A presence subscription or update through the slot's cell; RuntimeError says why
        it did not go."""
        index = self._live_cell(slot)
        session = self.sessions.get(slot)
        if index is None or session is None or not session.connected:
            raise RuntimeError("not_connected")
        try:
            result = await self._ask(index, make, PresenceResult)
        except (TimeoutError, CellGone):
            raise RuntimeError("presence_unanswered") from None
        if not result.ok:
            raise RuntimeError(result.detail)

    async def subscribe_presence(self, slot: Slot, chat_id: str) -> None:
        await self._presence_request(
            slot, lambda request_id: SubscribePresence(request_id, str(slot), chat_id)
        )

    async def send_presence(self, slot: Slot, chat_id: str, state: PresenceState) -> None:
        await self._presence_request(
            slot, lambda request_id: SendPresence(request_id, str(slot), chat_id, state)
        )

    def _read_chat_settings(self, slot: Slot) -> None:
        """Have the cell read whatsmeow's record of the known chats' settings (what the
        phone set); `ChatSettingsSeen` brings them back. First `before_settings_read`: the
        cell takes commands in order, so its patches go before the read. A task: the sends
        wait for answers this event loop's dispatcher brings."""
        known, before = self.known_chats, self.before_settings_read
        if known is None and before is None:
            return

        async def read() -> None:
            if before is not None:
                await before(slot)
            if known is None:
                return
            chats = (await known(slot))[:MAX_KNOWN_CHATS]
            if chats:
                self._tell_cell(slot, ReadChatSettings(str(slot), tuple(chats)))

        task = asyncio.create_task(read())
        self._reads.add(task)  # held until done: a bare task may be collected mid-way
        task.add_done_callback(self._reads.discard)

    async def _reread(self, slot: Slot, session: _Session) -> None:
        """Read the phone's chat settings again every `settings_every_s` while the session
        is this one and connected; ends with it (a new session starts its own)."""
        while self.sessions.get(slot) is session:
            await asyncio.sleep(self.settings_every_s)
            if self.sessions.get(slot) is session and session.connected:
                self._read_chat_settings(slot)

    # -- groups and contacts (the operations are `NeonizeGroups`') --------------------

    async def _groups(
        self, slot: Slot, operation: str, make: Callable[[int], GroupsCommand]
    ) -> GroupsValue:
        """One groups or contacts request to the slot's cell; GroupRefused says why not."""
        index = self._live_cell(slot)
        session = self.sessions.get(slot)
        if index is None or session is None or not session.connected:
            raise refusal(operation, "not_logged_in")
        try:
            result = await self._ask(index, make, GroupsResult)
        except (TimeoutError, CellGone):
            raise refusal(operation, "the session's process did not answer") from None
        if result.error is not None:
            raise refusal(operation, result.error)
        return result.value

    async def _ask(self, index: int, command: Callable[[int], Command], answer: type[R]) -> R:
        """One request to a cell and its answer; CellGone if the cell dies meanwhile."""
        self._requests += 1
        request_id = self._requests
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (index, reply)
        self.cells[index].send(command(request_id))
        try:
            result = await asyncio.wait_for(reply, SEND_TIMEOUT_S)
        finally:
            self._pending.pop(request_id, None)
        if not isinstance(result, answer):
            raise RuntimeError(f"the cell answered {type(result).__name__}, not {answer.__name__}")
        return result

    async def _fetch(self, kind: str, url: str, declared: str | None) -> tuple[bytes, str]:
        """A message's file from its URL, held to the kind's limits as an upload is before
        queueing (a URL's file can only be seen now): (bytes, type), or SendFailed with
        `media_too_large: ...` or `media_type_refused: ...`."""
        limit = outgoing_media.LIMITS[kind].max_bytes
        data = await self._download(url, limit)
        try:
            checked = outgoing_media.check(kind, data, declared)
        except TooLarge as error:
            raise SendFailed(f"media_too_large: {error}") from None
        except UnsupportedType as error:
            raise SendFailed(f"media_type_refused: {error}") from None
        return checked.data, checked.mime

    async def _download(self, url: str, limit: int) -> bytes:
        """Media is fetched here and handed to the cell as bytes (neonize would fetch URLs
        itself without a timeout); never more than one byte over `limit` is read."""
        try:
            async with aiohttp.ClientSession(timeout=MEDIA_TIMEOUT) as http, http.get(url) as got:
                if got.status != 200:
                    raise SendFailed(f"media_download_failed: HTTP {got.status}")
                # `read(n)` answers with what has arrived so far: the body is read to its end.
                chunks, size = [], 0
                async for chunk in got.content.iter_chunked(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        break
        except (aiohttp.ClientError, TimeoutError):
            raise SendFailed("media_download_failed") from None
        return b"".join(chunks)

    async def close(self) -> None:
        for slot in list(self.sessions):
            await self.stop(slot)
        for task in list(self._reads):
            task.cancel()
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

    async def handle(self, event: Event) -> None:
        if isinstance(event, CellDied):
            for index, reply in list(self._pending.values()):
                if index == event.cell and not reply.done():
                    reply.set_exception(CellGone("cell_died"))
            await self._restart_cell(event.cell, event.process)
        elif isinstance(
            event,
            SendResult
            | PairResult
            | MarkReadResult
            | LookupResult
            | ChatSettingsResult
            | PresenceResult
            | GroupsResult,
        ):
            pending = self._pending.get(event.request_id)
            if pending is not None and not pending[1].done():
                pending[1].set_result(event)
        else:
            slot = Slot.parse(event.slot)
            session = self.sessions.get(slot)
            if session is not None:
                await self._on_session_event(slot, session, event)

    async def _on_session_event(self, slot: Slot, session: _Session, event: SessionEvent) -> None:
        status = session.on_status
        match event:
            case Qr(code=code):
                await status(StatusEvent(slot, "CONNECTING", qr=qr_data_url(code)))
            case Connected(jid=jid):
                session.failures, session.connected, session.held = 0, True, None
                session.jid = jid or session.jid
                await status(StatusEvent(slot, "CONNECTED"))
                self._read_chat_settings(slot)
                if session.settings_reader is None or session.settings_reader.done():
                    session.settings_reader = asyncio.create_task(self._reread(slot, session))
            case OfflineSyncCompleted():
                self._read_chat_settings(slot)  # app-state changes made while offline are in
            case Disconnected():
                # whatsmeow reconnects by itself and says Connected again; if its connect loop
                # gives up instead, Ended follows and the backoff takes over.
                session.connected = False
                if session.held is None:
                    await status(StatusEvent(slot, "DISCONNECTED", reason="disconnected"))
            case LoggedOut(on_connect=on_connect, code=code, name=name):
                detail = {"code": code, "name": name, "on_connect": on_connect}
                await self._hold(slot, session, "logged_out", detail, wipe=True)
            case StreamReplaced():
                await self._hold(slot, session, "stream_replaced", None)
            case TemporaryBan(code=code, name=name, expire_s=expire_s):
                wait = expire_s or BAN_WITHOUT_EXPIRY_S
                detail = {
                    "code": code,
                    "name": name,
                    "expire_s": expire_s or None,
                    "expires_at": iso_utc(self.wall() + expire_s) if expire_s else None,
                }
                await self._hold(slot, session, "temporary_ban", detail, retry_after=wait)
            case ConnectFailure(code=code, name=name, message=message):
                detail = {"code": code, "name": name, "message": message or None}
                if code in RECONNECTING_CODES:
                    session.connected = False
                    await status(
                        StatusEvent(slot, "DISCONNECTED", reason="connect_failure", detail=detail)
                    )
                elif code in LOGOUT_CODES:
                    await self._hold(slot, session, "connect_failure", detail, wipe=True)
                else:
                    delay = self._next_backoff(session)
                    await self._hold(slot, session, "connect_failure", detail, retry_after=delay)
            case ClientOutdated():
                await self._hold(slot, session, "client_outdated", None)
            case KeepAliveTimeout(error_count=count, last_success=last):
                if session.connected:
                    detail = {"error_count": count, "last_success": iso_utc(last)}
                    await status(
                        StatusEvent(slot, "CONNECTED", reason="keepalive_timeout", detail=detail)
                    )
            case KeepAliveRestored():
                if session.connected:
                    await status(StatusEvent(slot, "CONNECTED"))
            case StreamError(code=code):
                if code == "515":  # auth wiped as for a logout
                    await self._hold(slot, session, "stream_error_515", {"code": code}, wipe=True)
                else:
                    session.connected = False
                    await status(
                        StatusEvent(
                            slot,
                            "DISCONNECTED",
                            reason=f"stream_error_{code}",
                            detail={"code": code},
                        )
                    )
            case Undecryptable(unavailable=unavailable):
                if not unavailable and session.breaker.record(self.now()):
                    self.breaker_trips += 1
                    await self._hold(
                        slot,
                        session,
                        "bad_mac_breaker",
                        None,
                        wipe=True,
                        retry_after=self.breaker.cooldown_s,
                    )
            case Message(fields=fields):
                if self.on_inbound is not None:
                    await self._inbound(dict(fields))
            case Receipt(chat_id=chat, message_ids=ids, state=state, timestamp=timestamp):
                if self.on_receipt is not None:
                    await self.on_receipt(ReceiptEvent(slot, chat, ids, state, timestamp))
            case MessageEdited(chat_id=chat, wa_message_id=message_id, body=body, edited_at=at):
                if self.on_remote is not None:
                    await self.on_remote(MessageEdit(slot, chat, message_id, body, at))
            case MessageRevoked(chat_id=chat, wa_message_id=message_id, deleted_at=at):
                if self.on_remote is not None:
                    await self.on_remote(MessageRevoke(slot, chat, message_id, at))
            case Reaction(chat_id=chat, wa_message_id=message_id, reactor=reactor, emoji=emoji):
                if self.on_remote is not None:
                    await self.on_remote(
                        MessageReaction(
                            slot, chat, message_id, reactor, emoji, event.from_me, event.timestamp
                        )
                    )
            case PollUpdate(chat_id=chat, poll_id=poll_id, voter=voter, option_hashes=hashes):
                if self.on_remote is not None:
                    # Only the store knows the poll's options: it resolves the hashes.
                    options = tuple(OPTION_HASH_PREFIX + digest for digest in hashes)
                    await self.on_remote(
                        PollVote(slot, chat, poll_id, voter, options, event.timestamp)
                    )
            case PresenceSeen(chat_id=chat, sender=sender, state=state, at=at):
                if self.on_presence is not None:
                    await self.on_presence(PresenceEvent(slot, chat, sender, state, at))
            case HistorySynced(messages=messages, chats=chats, contacts=contacts):
                if self.on_remote is not None:
                    await self.on_remote(
                        HistoryImport(
                            slot,
                            messages,
                            tuple(dict(chat) for chat in chats),
                            tuple(dict(contact) for contact in contacts),
                            tuple(
                                MessageReaction(
                                    slot,
                                    r.chat_id,
                                    r.wa_message_id,
                                    r.reactor,
                                    r.emoji,
                                    r.from_me,
                                    r.timestamp,
                                )
                                for r in event.reactions
                            ),
                            tuple(
                                PollVote(
                                    slot,
                                    v.chat_id,
                                    v.poll_id,
                                    v.voter,
                                    tuple(OPTION_HASH_PREFIX + h for h in v.option_hashes),
                                    v.timestamp,
                                )
                                for v in event.votes
                            ),
                        )
                    )
            case ChatSettingsSeen(settings=settings):
                if self.on_remote is not None:
                    for setting in settings:
                        change = ChatSettingsChange(
                            setting.pinned, setting.archived, True, setting.muted_until
                        )
                        await self.on_remote(RemoteChatSettings(slot, setting.chat_id, change))
            case Ended(reason=reason):
                session.connected = False
                if session.held is None and session.proxy is not None:
                    # the probe may take seconds: other slots' events do not wait for it
                    task = asyncio.create_task(self._ended_behind_proxy(slot, session, reason))
                    self._reads.add(task)
                    task.add_done_callback(self._reads.discard)
                elif session.held is None:
                    await status(StatusEvent(slot, "DISCONNECTED", reason=reason))
                    self._schedule_retry(slot, session, self._next_backoff(session))
            case _:
                assert_never(event)

    async def _inbound(self, fields: dict[str, Any]) -> None:
        """Hand a message to the worker. whatsmeow acknowledged it to WhatsApp already (a
        Python handler cannot stop it), so one the worker could not store is tried again
        here, in the background, after each of `INBOUND_RETRY_S`; the session's other
        events keep flowing meanwhile."""
        assert self.on_inbound is not None
        try:
            await self.on_inbound(fields)
        except Exception:
            task = asyncio.create_task(self._inbound_again(fields))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _inbound_again(self, fields: dict[str, Any]) -> None:
        assert self.on_inbound is not None
        for delay in INBOUND_RETRY_S:
            await self.sleep(delay)
            try:
                await self.on_inbound(fields)
            except Exception:
                continue
            self.inbound_retried += 1
            return
        self.inbound_lost += 1  # the worker logged each failure with the message's id

    async def _hold(
        self,
        slot: Slot,
        session: _Session,
        reason: str,
        detail: Mapping[str, Any] | None,
        *,
        wipe: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """WhatsApp ended the session: stop it in the cell (whatsmeow would leave its connect
        hanging), wipe the auth if the account is unlinked, say why, and reconnect only after
        `retry_after` (never when None)."""
        session.held, session.connected = reason, False
        if session.retry is not None:
            session.retry.cancel()
            session.retry = None
        self._tell_cell(slot, Stop(str(slot)))
        if wipe:
            shutil.rmtree(self.auth_dir(slot), ignore_errors=True)
            # Unlinked: the next login may be another account, which a connect that could
            # not read the JID must not pass off as this one (`account_guard`).
            session.jid = ""
        await session.on_status(
            StatusEvent(slot, "DISCONNECTED", reason=reason, logged_out=wipe, detail=detail)
        )
        if retry_after is not None:
            self._schedule_retry(slot, session, retry_after)

    async def _ended_behind_proxy(self, slot: Slot, session: _Session, reason: str) -> None:
        """Say whose fault a failed connect through a proxy was, then back off as any."""
        proxy = session.proxy
        assert proxy is not None
        detail: dict[str, Any] = {"proxy": proxy.endpoint}
        if reason.startswith("connect_failed"):
            why = await probe(proxy)
            if why is not None:
                reason, detail["error"] = "proxy_unreachable", why
        if self.sessions.get(slot) is not session or session.held is not None:
            return  # stopped or held meanwhile
        await session.on_status(StatusEvent(slot, "DISCONNECTED", reason=reason, detail=detail))
        self._schedule_retry(slot, session, self._next_backoff(session))

    def _next_backoff(self, session: _Session) -> float:
        delay = BACKOFF_S[min(session.failures, len(BACKOFF_S) - 1)]
        session.failures += 1
        return delay

    def _schedule_retry(self, slot: Slot, session: _Session, delay: float) -> None:
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
            session = self.sessions.get(slot)
            # A held session keeps its hold (a ban's expiry, a replaced stream): its own
            # retry, if any, brings it back.
            if placed == index and session is not None and session.held is None:
                await self._connect(slot)  # resumes from the store: no new QR if logged in
