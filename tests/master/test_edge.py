"""The edge at the byte level: what the HTTP contract tests (tests/master/test_master_http.py,
run against the app alone and behind the edge) cannot show with a well-behaved client.

Raw sockets for pipelining, HTTP/1.0, upgrades and malformed input; upstreams that
close kept-alive connections, flood, or lose their client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.routing import ShardRoute
from wasp_master.run import serving
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore

from wasp.slots import SlotRange

FLOOD_BYTES = 48 << 20


@dataclass
class Upstreams:
    """What the test upstreams saw."""

    flood_written: int = 0
    flood_cut: asyncio.Event = field(default_factory=asyncio.Event)
    flaky_requests: list[bytes] = field(default_factory=list)


async def echo(request: web.Request) -> web.StreamResponse:
    seen: Upstreams = request.app[SEEN]
    if request.path.endswith("/chunked"):
        response = web.StreamResponse()  # no length: the worker's answer is chunked
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        await response.write_eof()
        return response
    if request.path.endswith("/flood"):
        response = web.StreamResponse(headers={"Content-Length": str(FLOOD_BYTES)})
        await response.prepare(request)
        block = b"z" * (1 << 16)
        try:
            while seen.flood_written < FLOOD_BYTES:
                await response.write(block)  # waits while the master does not read
                seen.flood_written += len(block)
        except (ConnectionError, asyncio.CancelledError):
            seen.flood_cut.set()
            raise
        return response
    body = await request.read()
    return web.json_response(
        {
            "path": request.path,
            "query": request.rel_url.raw_query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode(),
        }
    )


SEEN = web.AppKey("seen", Upstreams)


async def flaky(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Upstreams
) -> None:
    """Answers the first request of a connection and keeps it alive; hangs up on the second."""
    answered = 0
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b" ", 2)
            if path.startswith(b"/api/"):  # not the master's own event polls
                seen.flaky_requests.append(method)
            if answered:
                break  # as a worker whose keep-alive timer fired just now
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            answered += 1
    writer.close()


@dataclass
class Stack:
    port: int
    seen: Upstreams


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    seen = Upstreams()
    upstream = web.Application()
    upstream[SEEN] = seen
    upstream.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(upstream)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    echo_port = runner.addresses[0][1]
    flaky_server = await asyncio.start_server(lambda r, w: flaky(r, w, seen), "127.0.0.1", 0)
    flaky_port = flaky_server.sockets[0].getsockname()[1]
    directory = ShardDirectory()
    directory.put(ShardRoute("echo", f"http://127.0.0.1:{echo_port}", SlotRange.parse("E1", "E9")))
    directory.put(
        ShardRoute("flaky", f"http://127.0.0.1:{flaky_port}", SlotRange.parse("F1", "F9"))
    )
    (tmp_path / "config").mkdir()
    config = MasterConfig(host="127.0.0.1", port=0, config_dir=tmp_path / "config")
    app = build_app(config, directory, DirectoryStore(config.config_dir))
    async with serving(config, app) as port:
        yield Stack(port, seen)
    flaky_server.close()
    await runner.cleanup()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 answer: Content-Length, chunked, or up to the close."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
    elif status == 101:
        body = b""
    else:
        body = await reader.read()
    return Answer(status, headers, body)


async def test_pipelined_requests_are_answered_in_order_whoever_serves_them(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(
        b"GET /api/accounts/E1/echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /api/shards HTTP/1.1\r\nHost: x\r\n\r\n"  # the app's, over its socket
        b"POST /api/accounts/E2/echo?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /api/accounts/E3/echo?n=4 HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
    )
    first, second, third, fourth = [await read_answer(reader) for _ in range(4)]
    writer.close()
    assert json.loads(first.body)["query"] == "n=1"
    assert [s["id"] for s in json.loads(second.body)["shards"]] == ["echo", "flaky"]
    assert json.loads(third.body)["body"] == "abc"
    assert json.loads(fourth.body)["body"] == "def"


async def test_a_websocket_upgrade_is_tunnelled_to_the_app(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(b"GET /api/accounts/E1/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(reader)).status == 200
    # The same connection becomes Socket.IO's WebSocket (engine.io v4).
    writer.write(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    switched = await read_answer(reader)
    assert switched.status == 101
    assert switched.headers["upgrade"].lower() == "websocket"
    assert switched.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    frame = await asyncio.wait_for(reader.readexactly(2), 5)
    assert frame[0] == 0x81  # a final text frame: engine.io's open packet
    payload = await reader.readexactly(frame[1] & 0x7F)
    assert payload.startswith(b'0{"sid":')
    writer.close()


async def test_an_http_10_client_gets_the_chunked_answer_up_to_the_close(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(b"GET /api/accounts/E1/chunked HTTP/1.0\r\n\r\n")
    answer = await asyncio.wait_for(read_answer(reader), 5)
    assert answer.status == 200
    assert "transfer-encoding" not in answer.headers
    assert answer.headers["connection"] == "close"
    assert answer.body == b"one,two,three"
    writer.close()


async def test_a_connection_the_worker_closed_is_retried_for_a_get_but_never_for_a_post(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{stack.port}") as http:
        assert (await http.get("/api/accounts/F1/a")).status == 200
        # Kept alive, then closed by the worker on this GET: sent again on a new connection.
        retried = await http.get("/api/accounts/F1/b")
        assert (retried.status, await retried.text()) == (200, "ok")
        assert stack.seen.flaky_requests == [b"GET", b"GET", b"GET"]
        # A POST that reached the worker is never sent twice: the client hears 503.
        lost = await http.post("/api/accounts/F1/send", data=b"{}")
        assert lost.status == 503
        assert "shard flaky is unavailable" in (await lost.json())["error"]
        assert lost.headers["Retry-After"]
    assert stack.seen.flaky_requests.count(b"POST") == 1


async def test_a_slow_reader_holds_the_worker_back_instead_of_filling_memory(
    stack: Stack,
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(("127.0.0.1", stack.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /api/accounts/E1/flood HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readexactly(1 << 16)
    await asyncio.sleep(1.0)
    # Socket buffers hold a few MiB; without flow control the master would have read it all.
    assert stack.seen.flood_written < FLOOD_BYTES // 2
    received = 1 << 16
    while chunk := await reader.read(1 << 20):
        received += len(chunk)
        if received >= FLOOD_BYTES:
            break
    assert received >= FLOOD_BYTES
    writer.close()


async def test_a_client_that_hangs_up_mid_answer_cuts_the_worker_off(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(b"GET /api/accounts/E1/flood HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readexactly(1 << 16)
    writer.transport.abort()
    await asyncio.wait_for(stack.seen.flood_cut.wait(), 5)
    assert stack.seen.flood_written < FLOOD_BYTES


async def test_x_forwarded_for_is_the_master_s_to_set(stack: Stack) -> None:
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{stack.port}") as http:
        direct = await (await http.get("/api/accounts/E1/echo", headers=spoof)).json()
        # On the same kept connection: routed by the body, so through the app.
        by_body = await (await http.post("/api/notes", json={"slot": "E2"}, headers=spoof)).json()
    assert by_body["path"] == "/api/notes"
    for seen in (direct, by_body):
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert seen["headers"]["x-forwarded-host"] != "evil"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/accounts/E1/echo HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /api/accounts/E1/echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
async def test_a_malformed_request_is_400_with_the_reason(
    stack: Stack, request_bytes: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(request_bytes)
    answer = await asyncio.wait_for(read_answer(reader), 5)
    assert answer.status == 400
    assert "malformed HTTP request" in json.loads(answer.body)["error"]
    assert await reader.read() == b""  # and the connection is closed
    writer.close()


async def test_forwarded_requests_are_counted_per_shard(stack: Stack) -> None:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{stack.port}") as http:
        for _ in range(3):
            assert (await http.get("/api/accounts/E4/echo")).status == 200
        metrics = await (await http.get("/metrics")).text()
    assert 'wasp_master_requests_total{code="200",shard="echo"} 3.0' in metrics


async def test_a_request_head_without_end_is_refused_before_it_fills_memory(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(b"GET /api/accounts/E1/echo HTTP/1.1\r\nX-Long: ")
    # One header, in pieces, never ending: the 16th piece takes the head past 64 KiB.
    # (Nothing more is sent: bytes arriving after the refusal would reset the connection.)
    for _ in range(16):
        writer.write(b"v" * 4096)
        await writer.drain()
        await asyncio.sleep(0.005)
    answer = await asyncio.wait_for(read_answer(reader), 5)
    assert answer.status == 431
    assert "request head over" in json.loads(answer.body)["error"]
    writer.close()
    # A large body is not a large head.
    async with aiohttp.ClientSession(f"http://127.0.0.1:{stack.port}") as http:
        big = await http.post("/api/accounts/E1/echo", data=b"b" * (512 << 10))
        assert len((await big.json())["body"]) == 512 << 10


async def test_expect_100_continue_is_passed_both_ways(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    writer.write(
        b"POST /api/accounts/E1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    # The worker asks for the body through the master before it has any of it.
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 ")
    writer.write(b"hello")
    answer = await asyncio.wait_for(read_answer(reader), 5)
    assert json.loads(answer.body)["body"] == "hello"
    writer.write(b"GET /api/accounts/E1/echo?after=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads((await read_answer(reader)).body)["query"] == "after=1"  # still in step
    writer.close()
