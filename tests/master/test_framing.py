"""The master at the byte level: every client gets its own answer, whatever bytes it sends.

A real worker (simulator) sits behind the master, reached over the proxy's pooled
keep-alive connections; a middleware added to it records every request it handles.
For each input the master either refuses it with a 4xx and closes the connection,
or the worker sees exactly the one request the client meant. Either way a request
after it, on the same connection (if still open) and on a new one, gets its own
answer. Requests are written by hand; answers are read with llhttp
(`tests/support/raw_http.py`).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Middleware
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.routing import ShardRoute
from wasp_master.run import serving
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore
from wasp_worker.app import build_app as build_worker
from wasp_worker.events import EventLog

from tests.support.raw_http import Answer, AnswerReader
from tests.support.worker import WORKER_TOKEN
from tests.worker.test_worker_http import config as worker_config
from wasp.slots import SlotRange

KEY = "framing-key"
FLOOD_BYTES = 48 << 20
Seen = tuple[str, str, bytes]  # method, path and query, body: a request as the worker got it
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstreams:
    """What reached the upstreams behind the master."""

    worker: list[Seen] = field(default_factory=list)
    flood_written: int = 0
    flood_cut: asyncio.Event = field(default_factory=asyncio.Event)
    flaky_requests: list[bytes] = field(default_factory=list)
    flaky_connections: dict[int, int] = field(default_factory=dict)


SEEN = web.AppKey("seen", Upstreams)


def recorder(seen: Upstreams) -> Middleware:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):  # not the master's /health and /events polls
            seen.worker.append((request.method, request.path_qs, await request.read()))
        return await handler(request)

    return record


async def echo(request: web.Request) -> web.StreamResponse:
    seen = request.app[SEEN]
    if request.path.endswith("/chunked"):
        response = web.StreamResponse()  # no length: the upstream's answer is chunked
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
    return web.json_response(
        {
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": (await request.read()).decode(),
        }
    )


async def flaky(request: web.Request) -> web.StreamResponse:
    """Answers the first request of a connection and keeps it alive; hangs up on the second,
    unanswered: a worker whose keep-alive timer fires just as a request arrives (a fault a
    real worker produces only by chance)."""
    seen = request.app[SEEN]
    await request.read()
    if request.path.startswith("/api/"):  # not the master's own event polls
        seen.flaky_requests.append(request.method.encode())
    connection = id(request.protocol)
    seen.flaky_connections[connection] = seen.flaky_connections.get(connection, 0) + 1
    if seen.flaky_connections[connection] > 1 and request.transport is not None:
        request.transport.abort()
    return web.Response(text="ok")


@dataclass
class Stack:
    port: int
    seen: Upstreams

    async def connect(self) -> tuple[AnswerReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return AnswerReader(reader), writer


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    seen = Upstreams()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    worker = build_worker(
        worker_config(tmp_path / "w1", slot_from="A1", slot_to="A50", config_dir=config_dir),
        EventLog(stream=io.StringIO()),
    )
    worker.middlewares.insert(0, recorder(seen))
    upstream = web.Application()
    upstream[SEEN] = seen
    upstream.router.add_route("*", "/{tail:.*}", echo)
    hangs_up = web.Application()
    hangs_up[SEEN] = seen
    hangs_up.router.add_route("*", "/{tail:.*}", flaky)
    runners = [web.AppRunner(worker), web.AppRunner(upstream), web.AppRunner(hangs_up)]
    ports = []
    for runner in runners:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ports.append(runner.addresses[0][1])
    directory = ShardDirectory()
    for shard, port, first, last in (
        ("w1", ports[0], "A1", "A50"),
        ("echo", ports[1], "E1", "E9"),
        ("flaky", ports[2], "F1", "F9"),
    ):
        directory.put(ShardRoute(shard, f"http://127.0.0.1:{port}", SlotRange.parse(first, last)))
    config = MasterConfig(
        host="127.0.0.1",
        port=0,
        config_dir=config_dir,
        api_keys=(KEY,),
        worker_tokens=(WORKER_TOKEN,),
    )
    app = build_app(config, directory, DirectoryStore(config_dir))
    async with serving(config, app) as port:
        yield Stack(port, seen)
    for runner in runners:
        await runner.cleanup()


def head(request_line: str, *headers: str) -> bytes:
    lines = [request_line, "Host: wasp", f"x-api-key: {KEY}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


OPEN_CHAT = "POST /api/accounts/A1/openChat HTTP/1.1"
BODY = b'{"chat_id": "551100000001"}'
MEANT: Seen = ("POST", "/api/accounts/A1/openChat", BODY)
STATUS_WITH_BODY: Seen = ("GET", "/api/accounts/A1/status", BODY)


def chunks(body: bytes, size_line: bytes | None = None) -> bytes:
    size = size_line if size_line is not None else f"{len(body):x}".encode()
    return size + b"\r\n" + body + b"\r\n0\r\n\r\n"


def with_head(request_line: str, *headers: str, body: bytes = b"") -> bytes:
    return head(request_line, *headers) + body


# (case, the bytes sent, the request the worker must see, or None: refused and closed)
CASES: list[tuple[str, bytes, Seen | None]] = [
    ("te-capital", with_head(OPEN_CHAT, "Transfer-Encoding: Chunked", body=chunks(BODY)), MEANT),
    ("te-upper", with_head(OPEN_CHAT, "Transfer-Encoding: CHUNKED", body=chunks(BODY)), MEANT),
    ("te-spaces", with_head(OPEN_CHAT, "Transfer-Encoding:   chunked  ", body=chunks(BODY)), MEANT),
    ("te-tabs", with_head(OPEN_CHAT, "Transfer-Encoding:\tchunked\t", body=chunks(BODY)), None),
    (
        "te-chunked-identity",
        with_head(OPEN_CHAT, "Transfer-Encoding: chunked, identity", body=chunks(BODY)),
        None,
    ),
    ("te-identity", with_head(OPEN_CHAT, "Transfer-Encoding: identity", body=BODY), None),
    (
        "te-identity-length",
        with_head(
            OPEN_CHAT, "Transfer-Encoding: identity", f"Content-Length: {len(BODY)}", body=BODY
        ),
        None,
    ),
    (
        "te-gzip-chunked",
        with_head(OPEN_CHAT, "Transfer-Encoding: gzip, chunked", body=chunks(BODY)),
        None,
    ),
    (
        "te-twice",
        with_head(
            OPEN_CHAT, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked", body=chunks(BODY)
        ),
        None,
    ),
    (
        "te-and-length",
        with_head(
            OPEN_CHAT, "Transfer-Encoding: chunked", f"Content-Length: {len(BODY)}", body=BODY
        ),
        None,
    ),
    (
        "length-twice-same",
        with_head(
            OPEN_CHAT, f"Content-Length: {len(BODY)}", f"Content-Length: {len(BODY)}", body=BODY
        ),
        None,
    ),
    (
        "length-twice-different",
        with_head(OPEN_CHAT, f"Content-Length: {len(BODY)}", "Content-Length: 3", body=BODY),
        None,
    ),
    ("length-plus", with_head(OPEN_CHAT, f"Content-Length: +{len(BODY)}", body=BODY), None),
    ("length-minus", with_head(OPEN_CHAT, f"Content-Length: -{len(BODY)}", body=BODY), None),
    ("length-inner-space", with_head(OPEN_CHAT, "Content-Length: 2 7", body=BODY), None),
    ("length-ows", with_head(OPEN_CHAT, f"Content-Length:   {len(BODY)}  ", body=BODY), MEANT),
    ("length-zeros", with_head(OPEN_CHAT, f"Content-Length: 000{len(BODY)}", body=BODY), MEANT),
    (
        "obs-fold",
        with_head(OPEN_CHAT, "X-Note: a", " folded", f"Content-Length: {len(BODY)}", body=BODY),
        None,
    ),
    (
        "obs-fold-te",
        with_head(OPEN_CHAT, "Transfer-Encoding: gzip,", " chunked", body=chunks(BODY)),
        None,
    ),
    (
        "bare-lf",
        with_head(OPEN_CHAT, f"Content-Length: {len(BODY)}", body=BODY).replace(b"\r\n", b"\n"),
        None,
    ),
    (
        "bare-lf-one-line",
        with_head(OPEN_CHAT, f"Content-Length: {len(BODY)}", body=BODY).replace(
            b"Host: wasp\r\n", b"Host: wasp\n"
        ),
        None,
    ),
    ("nul-in-value", with_head(OPEN_CHAT, "X-Note: a\0b", "Content-Length: 0"), None),
    ("cr-in-value", with_head(OPEN_CHAT, "X-Note: a\rb", "Content-Length: 0"), None),
    (
        "chunk-extension",
        with_head(
            OPEN_CHAT,
            "Transfer-Encoding: chunked",
            body=chunks(BODY, f"{len(BODY):x};x=1".encode()),
        ),
        MEANT,
    ),
    (
        "chunk-overflow",
        with_head(OPEN_CHAT, "Transfer-Encoding: chunked", body=chunks(BODY, b"f" * 17 + b"1b")),
        None,
    ),
    (
        "chunk-negative",
        with_head(OPEN_CHAT, "Transfer-Encoding: chunked", body=chunks(BODY, b"-1b")),
        None,
    ),
    (
        "chunk-not-hex",
        with_head(OPEN_CHAT, "Transfer-Encoding: chunked", body=chunks(BODY, b"1g")),
        None,
    ),
    (
        "chunk-0x",
        with_head(OPEN_CHAT, "Transfer-Encoding: chunked", body=chunks(BODY, b"0x1b")),
        None,
    ),
    (
        "body-on-get",
        with_head(
            "GET /api/accounts/A1/status HTTP/1.1", f"Content-Length: {len(BODY)}", body=BODY
        ),
        STATUS_WITH_BODY,
    ),
    (
        "http10-chunked",
        with_head(OPEN_CHAT.replace("1.1", "1.0"), "Transfer-Encoding: chunked", body=chunks(BODY)),
        None,
    ),
    (
        "http10-keep-alive-chunked",
        with_head(
            OPEN_CHAT.replace("1.1", "1.0"),
            "Connection: keep-alive",
            "Transfer-Encoding: chunked",
            body=chunks(BODY),
        ),
        None,
    ),
]


async def assert_answered_in_turn(
    stack: Stack, reader: AnswerReader, writer: asyncio.StreamWriter
) -> None:
    """A request on the open connection gets its own answer."""
    writer.write(head("GET /api/accounts/A3/status?rid=same HTTP/1.1"))
    answer = await reader.next()
    assert (answer.status, json.loads(answer.body)["slot"]) == (200, "A3")


async def assert_new_connection_answered(stack: Stack) -> None:
    reader, writer = await stack.connect()
    writer.write(head("GET /api/accounts/A4/status?rid=new HTTP/1.1"))
    answer = await reader.next()
    writer.close()
    assert (answer.status, json.loads(answer.body)["slot"]) == (200, "A4")


@pytest.mark.parametrize(("raw", "meant"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_input_is_refused_and_closed_or_forwarded_as_meant(
    stack: Stack, raw: bytes, meant: Seen | None
) -> None:
    reader, writer = await stack.connect()
    writer.write(raw)
    answer = await reader.next()
    expected: list[Seen] = []
    if meant is None:
        assert 400 <= answer.status < 500, answer
        assert await reader.closed(), "a refused request leaves no connection to go on with"
    else:
        expected.append(meant)
        assert answer.status < 500, answer
        if meant == MEANT:  # the body arrived whole: the worker read the chat id from it
            assert json.loads(answer.body)["chat_id"] == "551100000001@s.whatsapp.net"
        if answer.keeps_alive:
            await assert_answered_in_turn(stack, reader, writer)
            expected.append(("GET", "/api/accounts/A3/status?rid=same", b""))
    writer.close()
    await assert_new_connection_answered(stack)
    expected.append(("GET", "/api/accounts/A4/status?rid=new", b""))
    assert stack.seen.worker == expected


async def test_a_request_hidden_in_a_chunk_is_a_body_not_a_request(stack: Stack) -> None:
    """The smuggling that a hand-made front door once let through: `Chunked`, capital C,
    with a whole request as its chunk. Another client must get its own answer."""
    hidden = head("GET /events?after=0.99999&wait=2 HTTP/1.1")
    reader, writer = await stack.connect()
    writer.write(
        with_head(
            "GET /api/accounts/A1/status HTTP/1.1",
            "Transfer-Encoding: Chunked",
            body=chunks(hidden),
        )
    )
    first = await reader.next()
    assert json.loads(first.body)["slot"] == "A1"
    await assert_new_connection_answered(stack)
    await assert_answered_in_turn(stack, reader, writer)
    writer.close()
    assert stack.seen.worker == [
        ("GET", "/api/accounts/A1/status", hidden),
        ("GET", "/api/accounts/A4/status?rid=new", b""),
        ("GET", "/api/accounts/A3/status?rid=same", b""),
    ]


async def test_pipelined_requests_are_answered_in_order(stack: Stack) -> None:
    reader, writer = await stack.connect()
    writer.write(
        head("GET /api/accounts/A5/status HTTP/1.1")
        + head("GET /api/shards HTTP/1.1")  # the master's own, between two forwarded
        + with_head(OPEN_CHAT, f"Content-Length: {len(BODY)}", body=BODY)
        + with_head(
            "POST /api/accounts/A6/openChat HTTP/1.1",
            "Transfer-Encoding: chunked",
            body=chunks(b'{"chat_id": "551100000006"}'),
        )
    )
    answers = [await reader.next() for _ in range(4)]
    writer.close()
    assert json.loads(answers[0].body)["slot"] == "A5"
    assert [s["id"] for s in json.loads(answers[1].body)["shards"]] == ["w1", "echo", "flaky"]
    assert json.loads(answers[2].body)["chat_id"] == "551100000001@s.whatsapp.net"
    assert json.loads(answers[3].body)["chat_id"] == "551100000006@s.whatsapp.net"


async def test_expect_100_continue_then_the_body_and_the_connection_stays_in_step(
    stack: Stack,
) -> None:
    reader, writer = await stack.connect()
    writer.write(head(OPEN_CHAT, f"Content-Length: {len(BODY)}", "Expect: 100-continue"))
    interim = await reader.next()
    assert interim.status == 100
    writer.write(BODY)
    answer = await reader.next()
    assert json.loads(answer.body)["chat_id"] == "551100000001@s.whatsapp.net"
    await assert_answered_in_turn(stack, reader, writer)
    writer.close()
    assert stack.seen.worker == [MEANT, ("GET", "/api/accounts/A3/status?rid=same", b"")]


async def test_fifty_clients_at_once_each_get_their_own_answers(stack: Stack) -> None:
    async def client(n: int) -> list[tuple[str, str]]:
        slot, chat = f"A{n}", f"5511{n:08d}"
        got = []
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{stack.port}",
            headers={"x-api-key": KEY},
            connector=aiohttp.TCPConnector(limit=1),  # one kept-alive connection each
        ) as http:
            for round_ in range(4):
                async with http.get(f"/api/accounts/{slot}/status?rid={n}.{round_}") as status:
                    got.append(("status", (await status.json())["slot"]))
                async with http.post(
                    f"/api/accounts/{slot}/openChat", json={"chat_id": chat}
                ) as opened:
                    got.append(("chat", (await opened.json())["chat_id"]))
        return got

    results = await asyncio.gather(*(client(n) for n in range(1, 51)))
    for n, got in enumerate(results, start=1):
        assert got == [("status", f"A{n}"), ("chat", f"5511{n:08d}@s.whatsapp.net")] * 4
    assert len(stack.seen.worker) == 50 * 8


async def test_an_http_10_client_gets_a_chunked_answer_up_to_the_close(stack: Stack) -> None:
    reader, writer = await stack.connect()
    writer.write(head("GET /api/accounts/E1/chunked HTTP/1.0"))
    answer = await reader.next()
    assert (answer.status, answer.body) == (200, b"one,two,three")
    assert "transfer-encoding" not in answer.headers
    assert await reader.closed()
    writer.close()


async def test_a_connection_the_worker_closed_is_retried_for_a_get_but_never_for_a_post(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{stack.port}", headers={"x-api-key": KEY}
    ) as http:
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
    writer.write(head("GET /api/accounts/E1/flood HTTP/1.1"))
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
    writer.write(head("GET /api/accounts/E1/flood HTTP/1.1"))
    await reader.readexactly(1 << 16)
    writer.transport.abort()
    await asyncio.wait_for(stack.seen.flood_cut.wait(), 5)
    assert stack.seen.flood_written < FLOOD_BYTES


async def test_x_forwarded_headers_are_the_master_s_to_set(stack: Stack) -> None:
    reader, writer = await stack.connect()
    writer.write(
        head(
            "GET /api/accounts/E1/echo HTTP/1.1",
            "X-Forwarded-For: 6.6.6.6",
            "X-Forwarded-Host: evil",
        )
    )
    seen = json.loads((await reader.next()).body)["headers"]
    writer.close()
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-host"] == "wasp"
    assert "x-api-key" not in seen  # the client's credential is the master's, not the worker's


async def test_a_head_line_too_long_is_refused_and_closed(stack: Stack) -> None:
    reader, writer = await stack.connect()
    writer.write(head("GET /api/accounts/A1/status HTTP/1.1", "X-Long: " + "v" * 70_000))
    answer: Answer = await reader.next()
    assert answer.status == 400
    assert await reader.closed()
    writer.close()
    assert stack.seen.worker == []
