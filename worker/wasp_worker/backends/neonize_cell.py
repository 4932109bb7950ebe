"""A cell: a child process that holds up to K neonize sessions.

neonize's Go core aborts the whole process on some calls and on two
`connect()`s at once, so sessions never live in the worker itself. A cell
receives `cell_protocol.Command`s on a pipe and sends back `cell_protocol.Event`s,
which `neonize_events` translates from neonize's own event objects; it never
imports anything of the worker's HTTP side. Connects and stops are serialized
inside the cell; each session's blocking `connect()` runs on its own thread,
and sends, pairing and read receipts on a small pool.

The cell reports and obeys: what to do about a logout, a ban or a replaced
stream is the worker's decision (it answers with `Stop`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from wasp_worker.backends.cell_protocol import (
    ChatSettingsResult,
    ChatSettingsSeen,
    Connected,
    Ended,
    Event,
    GroupsRequest,
    LookupLid,
    LookupResult,
    MarkRead,
    MarkReadResult,
    Message,
    Pair,
    PairResult,
    PresenceResult,
    Qr,
    ReadChatSettings,
    Send,
    SendPresence,
    SendResult,
    SetChatSettings,
    Start,
    Stop,
    SubscribePresence,
)

# How a dial error says the proxy refused its credentials: Go's HTTP CONNECT error is
# the proxy's status text (407, or 401 from some proxies), x/net's SOCKS5 its own words.
AUTH_REFUSED = ("Proxy Authentication Required", "Unauthorized", "authentication failed")


def connect_failure(error: Exception, proxied: bool) -> str:
    """The reason a connect failed, without any of the error's text (it may hold secrets)."""
    if proxied and any(words in str(error) for words in AUTH_REFUSED):
        return "proxy_auth_refused"
    return f"connect_failed: {type(error).__name__}"


def run_cell(conn: Connection) -> None:
    # neonize reconfigures root logging at import and whatsmeow logs pairing
    # details at INFO: keep the cell quiet, and its stdout away from the worker's.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    import neonize.events
    from neonize._binder import ProxySettings
    from neonize.client import NewClient
    from neonize.events import HistorySyncEv, MessageEv
    from neonize.utils import build_jid
    from neonize.utils.enum import ChatPresence, ChatPresenceMedia, Presence, ReceiptType

    from wasp.slots import Slot
    from wasp_worker import media
    from wasp_worker.backends import (
        neonize_actions,
        neonize_groups,
        neonize_outgoing,
        neonize_patches,
    )
    from wasp_worker.backends.neonize_events import (
        TRANSLATORS,
        chat_setting,
        history_sync,
        inbound_fields,
        is_poll_vote,
        jid_text,
        message_change,
        poll_update,
        reaction,
    )

    logging.getLogger().setLevel(logging.WARNING)
    send_lock = threading.Lock()
    connect_lock = threading.Lock()  # never two connects (or stops) at once in one process
    clients: dict[str, Any] = {}

    def tell(event: Event) -> None:
        with send_lock:
            conn.send(event)

    def jid(text: str) -> Any:
        user, _, server = text.partition("@")
        return build_jid(user, server)

    def session(slot: str, db_path: str, work_dir: str, proxy: str) -> None:
        settled = threading.Event()

        def settle() -> None:
            # A connect holds the cell's connect lock until its first sign of life.
            if not settled.is_set():
                settled.set()
                connect_lock.release()

        client = NewClient(db_path, uuid=slot)
        clients[slot] = client

        @client.qr
        def on_qr(_: Any, data: bytes) -> None:
            settle()
            tell(Qr(slot, data.decode(errors="replace")))

        def subscribe(name: str) -> None:
            translate = TRANSLATORS[name]

            def on_event(_: Any, event: Any) -> None:
                translated = translate(slot, event)
                if isinstance(translated, Connected):
                    settle()
                    # Who the account is: the reactor of its own reactions, the admin it is.
                    me = getattr(client, "me", None)
                    translated = Connected(slot, jid_text(getattr(me, "JID", None)))
                if translated is not None:
                    tell(translated)

            client.event(getattr(neonize.events, name))(on_event)

        for name in TRANSLATORS:
            subscribe(name)

        def own_jid(handle: Any) -> str:
            return jid_text(getattr(getattr(handle, "me", None), "JID", None))

        @client.event(HistorySyncEv)
        def on_history(handle: Any, event: Any) -> None:
            synced = history_sync(slot, own_jid(handle), event, time.time())
            if synced is not None:
                tell(synced)

        @client.event(MessageEv)
        def on_message(handle: Any, event: Any) -> None:
            # An edit, a delete for everyone or a reaction: no message of its own.
            change = message_change(slot, event) or reaction(slot, event)
            if change is not None:
                tell(change)
                return
            if is_poll_vote(event):
                try:  # needs the poll's secret, which whatsmeow kept when the poll came
                    vote = handle.decrypt_poll_vote(event)
                except Exception:
                    return  # a poll this device never saw: nothing to count it against
                update = poll_update(slot, event, vote.selectedOptions)
                if update is not None:
                    tell(update)
                return
            fields = inbound_fields(slot, own_jid(handle), event)
            if fields is None:
                return
            if fields["media_type"] is not None:
                try:  # never log the bytes; a failed download leaves media_url empty
                    data = handle.download_any(event.Message)
                    name = media.save(
                        Path(work_dir),
                        Slot.parse(slot),
                        fields["wa_message_id"],
                        fields["mime_type"],
                        data,
                    )
                    fields["media_url"] = f"/api/accounts/{slot}/media/{name}"
                except Exception as error:
                    fields["media_error"] = type(error).__name__
            tell(Message(slot, fields))

        reason = "stopped"
        connect_lock.acquire()
        try:  # blocks for the session's life; through the slot's proxy alone if it has one
            client.connect(ProxySettings(proxy_address=proxy) if proxy else None)
        except Exception as error:
            # The message may quote the proxy URL with its credentials: only a verdict leaves.
            reason = connect_failure(error, bool(proxy))
        finally:
            settle()
            clients.pop(slot, None)
            tell(Ended(slot, reason))

    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="request")

    def send(command: Send) -> None:
        client = clients.get(command.slot)
        if client is None or not client.is_connected:
            tell(SendResult(command.request_id, "retry", "not_connected"))
            return
        own = jid_text(getattr(getattr(client, "me", None), "JID", None)) or None
        try:
            to = jid(command.to)
            if command.kind in neonize_actions.KINDS:  # an action on a message sent before
                message = neonize_actions.build(
                    client, command.kind, to, command.details, client.get_me().JID
                )
            else:
                message = neonize_outgoing.build(
                    client,
                    command.kind,
                    command.text,
                    command.data,
                    {**command.details, "mime": command.mime or command.details.get("mime")},
                    command.file_name,
                    own,
                )
            response = client.send_message(to, message)
        except Exception as error:
            tell(SendResult(command.request_id, "failed", f"send_error: {type(error).__name__}"))
            return
        tell(SendResult(command.request_id, "sent", str(getattr(response, "ID", ""))))

    def pair(command: Pair) -> None:
        client = clients.get(command.slot)
        if client is None:
            tell(PairResult(command.request_id, False, "no login in progress: connect first"))
            return
        try:  # only valid once connect() runs and the first QR came (neonize notes)
            code = client.PairPhone(command.phone, True)
        except Exception as error:
            tell(PairResult(command.request_id, False, f"pairing refused: {type(error).__name__}"))
            return
        tell(PairResult(command.request_id, True, str(code)))

    def mark_read(command: MarkRead) -> None:
        client = clients.get(command.slot)
        if client is None or not client.is_connected:
            tell(MarkReadResult(command.request_id, False, "not_connected"))
            return
        # Go dereferences every JID field and aborts the process on a missing one, so the
        # sender is always a whole JID: the chat itself in a direct chat (whatsmeow ignores
        # it there).
        try:
            client.mark_read(
                *command.message_ids,
                chat=jid(command.chat),
                sender=jid(command.sender or command.chat),
                receipt=ReceiptType.READ,
            )
        except Exception as error:
            tell(
                MarkReadResult(
                    command.request_id, False, f"mark_read_error: {type(error).__name__}"
                )
            )
            return
        tell(MarkReadResult(command.request_id, True, ""))

    def lookup_lid(command: LookupLid) -> None:
        client = clients.get(command.slot)
        # whatsmeow's store lookups abort the process unless the client is logged in.
        if client is None or not client.is_connected or not client.is_logged_in:
            tell(LookupResult(command.request_id, False, "not_connected"))
            return
        try:
            phone = client.get_pn_from_lid(jid(command.lid))
        except Exception as error:
            tell(LookupResult(command.request_id, False, f"lookup_error: {type(error).__name__}"))
            return
        tell(LookupResult(command.request_id, True, jid_text(phone)))

    def logged_in(slot: str) -> Any:
        """The slot's client when it can use whatsmeow's store (lookups abort the process
        unless logged in), else None."""
        client = clients.get(slot)
        if client is None or not client.is_connected or not client.is_logged_in:
            return None
        return client

    def set_chat_settings(command: SetChatSettings) -> None:
        client = logged_in(command.slot)
        if client is None:
            tell(ChatSettingsResult(command.request_id, False, "not_connected"))
            return
        detail = ""
        try:
            for patch in neonize_patches.patches(command, time.time()):
                client.send_app_state(patch)
        except Exception as error:  # whatsmeow's reason (no app-state keys, refused, ...)
            detail = f"app_state_error: {type(error).__name__}: {str(error)[:200]}"
        # whatsmeow's own record follows what was set here, sent or not, so reading it
        # back at the next connect does not undo the user's setting.
        chat = jid(command.chat_id)
        try:
            if command.pinned is not None:
                client.chat_settings.put_pinned(chat, command.pinned)
            if command.archived is not None:
                client.chat_settings.put_archived(chat, command.archived)
            if command.mute:
                client.chat_settings.put_muted_until(
                    chat, timedelta(seconds=command.muted_until or 0)
                )
        except Exception as error:
            detail = detail or f"chat_settings_store_error: {type(error).__name__}"
        tell(ChatSettingsResult(command.request_id, not detail, detail))

    def read_chat_settings(command: ReadChatSettings) -> None:
        client = logged_in(command.slot)
        if client is None:
            return  # the next connect reads them
        now, found = time.time(), []
        for chat_id in command.chat_ids:
            try:
                setting = chat_setting(
                    chat_id, client.chat_settings.get_chat_settings(jid(chat_id)), now
                )
            except Exception:
                continue  # one chat's unreadable record says nothing about the others
            if setting is not None:
                found.append(setting)
        if found:
            tell(ChatSettingsSeen(command.slot, tuple(found)))

    # Our chat presence as whatsmeow takes it: (state, media).
    presences = {
        "typing": (
            ChatPresence.CHAT_PRESENCE_COMPOSING,
            ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT,
        ),
        "recording": (
            ChatPresence.CHAT_PRESENCE_COMPOSING,
            ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO,
        ),
        "paused": (ChatPresence.CHAT_PRESENCE_PAUSED, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
    }

    def presence(command: SubscribePresence | SendPresence) -> None:
        client = logged_in(command.slot)
        if client is None:
            tell(PresenceResult(command.request_id, False, "not_connected"))
            return
        try:
            if isinstance(command, SubscribePresence):
                # WhatsApp sends presence only to a client that is itself available.
                client.send_presence(Presence.AVAILABLE)
                client.subscribe_presence(jid(command.chat_id))
            else:
                state, media_kind = presences[command.state]
                client.send_chat_presence(jid(command.chat_id), state, media_kind)
        except Exception as error:
            tell(
                PresenceResult(command.request_id, False, f"presence_error: {type(error).__name__}")
            )
            return
        tell(PresenceResult(command.request_id, True, ""))

    def groups_request(command: Any) -> None:
        # Only logged-in clients are called: whatsmeow's store calls abort the process else.
        tell(neonize_groups.answer(logged_in(command.slot), command))

    while True:
        try:
            command = conn.recv()
        except EOFError:
            break
        match command:
            case Send():
                pool.submit(send, command)
            case Pair():
                pool.submit(pair, command)
            case MarkRead():
                pool.submit(mark_read, command)
            case LookupLid():
                pool.submit(lookup_lid, command)
            case SetChatSettings():
                pool.submit(set_chat_settings, command)
            case ReadChatSettings():
                pool.submit(read_chat_settings, command)
            case SubscribePresence() | SendPresence():
                pool.submit(presence, command)
            case GroupsRequest():  # groups and contacts: `neonize_groups` runs them
                pool.submit(groups_request, command)
            case Start(slot=slot) if slot not in clients:
                threading.Thread(
                    target=session,
                    args=(slot, command.db_path, command.work_dir, command.proxy),
                    daemon=True,
                    name=f"session-{slot}",
                ).start()
            case Stop(slot=slot) if slot in clients:
                with connect_lock:
                    clients[slot].stop()
