"""The master's Socket.IO fan-out (`socketio_server`): every socket in an event's
rooms gets it exactly once and in order, over a websocket or over long-polling
upgraded to one, and a socket in two of the rooms still gets one copy."""

from __future__ import annotations

import asyncio
from typing import Any

import engineio.payload
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer
from wasp_master.live import ALL, socketio_server

EVENTS = 50


async def test_each_socket_in_the_rooms_gets_each_event_once_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The events are emitted back to back, so one long-poll answer carries them
    # all; python-engineio's client refuses more than 16 packets in one (the npm
    # client has no such limit).
    monkeypatch.setattr(engineio.payload.Payload, "max_decode_packets", EVENTS * 2)
    sio = socketio_server()

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        for room in auth["rooms"]:
            await sio.enter_room(sid, room)

    sio.on("connect", connect)
    app = web.Application()
    sio.attach(app)
    server = TestServer(app)
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    clients: dict[str, tuple[socketio.AsyncClient, list[int]]] = {}
    try:
        for name, rooms, transports in (
            ("both rooms, websocket", [ALL, "ws:sales"], ["websocket"]),
            ("all, polling then websocket", [ALL], ["polling", "websocket"]),
            ("sales, polling only", ["ws:sales"], ["polling"]),
            ("another workspace", ["ws:other"], ["websocket"]),
        ):
            client = socketio.AsyncClient(reconnection=False)
            got: list[int] = []

            async def tick(payload: dict[str, Any], got: list[int] = got) -> None:
                got.append(payload["n"])

            client.on("bench:tick", tick)
            await client.connect(url, auth={"rooms": rooms}, transports=transports)
            clients[name] = (client, got)
        await asyncio.sleep(0.5)  # the polling client's upgrade

        for n in range(EVENTS):
            await sio.emit("bench:tick", {"n": n}, to=[ALL, "ws:sales"])
        expected = list(range(EVENTS))
        for _ in range(100):
            if all(
                len(got) >= EVENTS for name, (_, got) in clients.items() if "another" not in name
            ):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # room for a duplicate to show up
        for name, (_, got) in clients.items():
            assert got == ([] if "another" in name else expected), name
        assert clients["all, polling then websocket"][0].transport() == "websocket"
    finally:
        # From the server side: a long-poll would otherwise wait for its next ping.
        for eio_sid in list(sio.eio.sockets):
            await sio.eio.disconnect(eio_sid)
        for client, _ in clients.values():
            await client.disconnect()
        await server.close()
