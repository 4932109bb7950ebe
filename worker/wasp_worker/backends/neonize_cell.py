"""A cell: a child process that holds up to K neonize sessions.

neonize's Go core aborts the whole process on some calls and on two
`connect()`s at once, so sessions never live in the worker itself. A cell
receives commands on a pipe and sends back small event tuples; it never
imports anything of the worker's HTTP side. Connects and stops are serialized
inside the cell; each session's blocking `connect()` runs on its own thread.

Messages on the pipe (tuples, first item the kind):
  parent -> cell: ("start", slot, db_path, work_dir) ("stop", slot)
                  ("send", request_id, slot, to_jid, kind, text, data, file_name, mime)
                  ("pair", request_id, slot, phone)
  cell -> parent: ("qr", slot, code) ("connected", slot) ("disconnected", slot, reason)
                  ("logged_out", slot, reason) ("stream_error", slot, code)
                  ("undecryptable", slot) ("message", slot, fields) ("ended", slot, reason)
                  ("send_result", request_id, outcome, detail)  outcome: sent|retry|failed
                  ("pair_result", request_id, ok, code_or_reason)
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def run_cell(conn: Connection) -> None:
    # neonize reconfigures root logging at import and whatsmeow logs pairing
    # details at INFO: keep the cell quiet, and its stdout away from the worker's.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    from neonize.client import NewClient
    from neonize.events import (
        ConnectedEv,
        DisconnectedEv,
        LoggedOutEv,
        MessageEv,
        StreamErrorEv,
        UndecryptableMessageEv,
    )
    from neonize.utils import build_jid

    from wasp.slots import Slot
    from wasp_worker import media
    from wasp_worker.backends.neonize_events import inbound_fields, jid_text

    logging.getLogger().setLevel(logging.WARNING)
    send_lock = threading.Lock()
    connect_lock = threading.Lock()  # never two connects (or stops) at once in one process
    clients: dict[str, Any] = {}

    def tell(*event: Any) -> None:
        with send_lock:
            conn.send(event)

    def session(slot: str, db_path: str, work_dir: str) -> None:
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
            tell("qr", slot, data.decode(errors="replace"))

        @client.event(ConnectedEv)
        def on_connected(_: Any, __: Any) -> None:
            settle()
            tell("connected", slot)

        @client.event(DisconnectedEv)
        def on_disconnected(_: Any, __: Any) -> None:
            tell("disconnected", slot, "disconnected")

        @client.event(LoggedOutEv)
        def on_logged_out(_: Any, event: Any) -> None:
            tell("logged_out", slot, str(getattr(event, "Reason", "")))

        @client.event(StreamErrorEv)
        def on_stream_error(_: Any, event: Any) -> None:
            tell("stream_error", slot, str(getattr(event, "Code", "")))

        @client.event(MessageEv)
        def on_message(handle: Any, event: Any) -> None:
            me = getattr(getattr(handle, "me", None), "JID", None)
            fields = inbound_fields(slot, jid_text(me), event)
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
            tell("message", slot, fields)

        @client.event(UndecryptableMessageEv)
        def on_undecryptable(_: Any, __: Any) -> None:
            tell("undecryptable", slot)

        reason = "stopped"
        connect_lock.acquire()
        try:
            client.connect()  # blocks for the session's life
        except Exception as error:
            reason = f"connect_failed: {type(error).__name__}"
        finally:
            settle()
            clients.pop(slot, None)
            tell("ended", slot, reason)

    sender = ThreadPoolExecutor(max_workers=4, thread_name_prefix="send")

    def send(
        request_id: int,
        slot: str,
        to: str,
        kind: str,
        text: str | None,
        data: bytes | None,
        file_name: str | None,
        mime: str | None,
    ) -> None:
        client = clients.get(slot)
        if client is None or not client.is_connected:
            tell("send_result", request_id, "retry", "not_connected")
            return
        user, _, server = to.partition("@")
        jid = build_jid(user, server)
        try:
            if kind == "text":
                response = client.send_message(jid, text or "")
            elif kind == "image":
                response = client.send_image(jid, data, caption=text)
            elif kind == "video":
                response = client.send_video(jid, data, caption=text)
            elif kind == "audio":
                response = client.send_audio(jid, data)
            else:
                response = client.send_document(
                    jid, data, caption=text, filename=file_name, mimetype=mime
                )
        except Exception as error:
            tell("send_result", request_id, "failed", f"send_error: {type(error).__name__}")
            return
        tell("send_result", request_id, "sent", str(getattr(response, "ID", "")))

    def pair(request_id: int, slot: str, phone: str) -> None:
        client = clients.get(slot)
        if client is None:
            tell("pair_result", request_id, False, "no login in progress: connect first")
            return
        try:  # only valid once connect() runs and the first QR came (neonize notes)
            code = client.PairPhone(phone, True)
        except Exception as error:
            tell("pair_result", request_id, False, f"pairing refused: {type(error).__name__}")
            return
        tell("pair_result", request_id, True, str(code))

    while True:
        try:
            command = conn.recv()
        except EOFError:
            break
        if command[0] == "send":
            sender.submit(send, *command[1:])
            continue
        if command[0] == "pair":
            sender.submit(pair, *command[1:])
            continue
        kind, slot = command[0], command[1]
        if kind == "start" and slot not in clients:
            threading.Thread(
                target=session,
                args=(slot, command[2], command[3]),
                daemon=True,
                name=f"session-{slot}",
            ).start()
        elif kind == "stop" and slot in clients:
            with connect_lock:
                clients[slot].stop()
