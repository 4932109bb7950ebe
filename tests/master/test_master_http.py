"""The master's HTTP contract over real loopback servers: two simulator workers,
an echo upstream for pass-through details, the master in front of them."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore
from wasp_worker.app import build_app as build_worker
from wasp_worker.compaction import DAY_S, Compactor
from wasp_worker.data_state import DATABASE
from wasp_worker.events import EventLog
from wasp_worker.state import HISTORY
from yarl import URL

from tests.support.cluster import free_port
from tests.support.worker import WORKER_TOKEN
from tests.worker.test_worker_http import config as worker_config
from wasp import worker_api
from wasp.contract import WORKER_TOKEN_HEADER
from wasp.slots import Slot, SlotRange

Client = TestClient[Any, Any]
RELEASE = web.AppKey("release", asyncio.Event)
TOKEN = "m-token-123"
KEY = "k-abc-456"


async def echo(request: web.Request) -> web.StreamResponse:
    """An upstream that tells what reached it."""
    if request.path.endswith("/slow"):
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"first\n")
        # The rest only once the client has read the first line through the master.
        await asyncio.wait_for(request.app[RELEASE].wait(), 5)
        await response.write(b"second\n")
        return response
    if request.path.endswith("/cookie"):
        response = web.json_response({"ok": True})
        response.set_cookie("session", "worker-secret")
        return response
    if request.path.endswith("/big"):
        return web.Response(body=b"x" * (3 << 20), headers={"X-Big": "1"})
    if request.path.endswith("/hang"):
        await asyncio.sleep(60)
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.rel_url.raw_query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "bytes": len(body),
            "sha": hash(body),
        },
        status=418 if request.method == "DELETE" else 200,
        headers={"X-Upstream": "echo", "Connection": "keep-alive, X-Hop", "X-Hop": "1"},
    )


@dataclass
class Stack:
    master: Client
    config_dir: Path
    directory: ShardDirectory
    workers: list[TestServer]
    echo_url: str
    release: asyncio.Event


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "accounts.json").write_text('[{"slot": "A1", "enabled": true}]')
    workers = [
        TestServer(
            build_worker(
                worker_config(tmp_path / name, slot_from=a, slot_to=b, config_dir=config_dir),
                EventLog(stream=io.StringIO()),
            )
        )
        for name, a, b in (("w1", "A1", "A50"), ("w2", "A51", "A100"))
    ]
    upstream = web.Application(client_max_size=16 << 20)
    upstream[RELEASE] = release = asyncio.Event()
    upstream.router.add_route("*", "/{tail:.*}", echo)
    echo_server = TestServer(upstream)
    for server in (*workers, echo_server):
        await server.start_server()
    directory = ShardDirectory()
    for server, (name, a, b) in zip(
        workers, (("w1", "A1", "A50"), ("w2", "A51", "A100")), strict=True
    ):
        url = str(server.make_url("")).rstrip("/")
        directory.put(ShardRoute(name, url, SlotRange.parse(a, b)))
    echo_url = str(echo_server.make_url("")).rstrip("/")
    # By name, as in a cluster (w1-0.w1.crm.svc): client cookie jars ignore bare IPs.
    named = echo_url.replace("127.0.0.1", "localhost")
    directory.put(ShardRoute("echo", named, SlotRange.parse("E1", "E9")))
    directory.put(
        ShardRoute("gone", f"http://127.0.0.1:{free_port()}", SlotRange.parse("G1", "G9"))
    )
    directory.put(ShardRoute("hung", echo_url, SlotRange.parse("H1", "H9")))
    config = MasterConfig(
        worker_tokens=(WORKER_TOKEN,),
        port=3000,
        master_token=TOKEN,
        api_keys=(KEY, "second-key"),
        config_dir=config_dir,
        read_timeout_s=1.0,
        health_interval_s=0.2,
    )
    app = build_app(config, directory, DirectoryStore(config_dir))
    async with TestClient(TestServer(app), headers={"x-api-key": KEY}) as master:
        yield Stack(master, config_dir, directory, workers, echo_url, release)
    for server in (*workers, echo_server):
        await server.close()


async def test_health_has_its_documented_shape_and_running_means_the_shard_answers(
    stack: Stack,
) -> None:
    for _ in range(50):
        body = await (await stack.master.get("/health")).json()
        if all(w["running"] for w in body["workers"] if w["id"] in ("w1", "w2")):
            break
        await asyncio.sleep(0.1)
    assert body["ok"] is True
    assert body["master"] == {"port": 3000}
    workers = {w["id"]: w for w in body["workers"]}
    assert set(workers["w1"]) == {"id", "port", "from", "to", "running"}
    assert (workers["w1"]["from"], workers["w1"]["to"], workers["w1"]["running"]) == (
        "A1",
        "A50",
        True,
    )
    assert workers["w2"]["port"] == stack.workers[1].port
    assert workers["gone"]["running"] is False


async def test_slot_operations_reach_the_owning_worker(stack: Stack) -> None:
    connected = await stack.master.post("/api/accounts/A60/connect")
    assert connected.status == 200
    assert (await connected.json())["status"] == "CONNECTING"
    health = await (await stack.master.get("/health")).json()
    assert health["ok"]
    direct = await stack.master.get("/api/accounts/A60/status")
    assert (await direct.json())["slot"] == "A60"
    # The worker for A1..A50 never saw it: its own answer says it has no session.
    assert (await (await stack.master.get("/api/accounts/A1/status")).json())["status"] == (
        "DISCONNECTED"
    )
    refused = await stack.master.post("/api/accounts/A61/send", json={"to": "x"})
    assert refused.status == 400  # the worker's own validation, passed back unchanged
    assert "invalid" in (await refused.json())["error"]


async def test_request_and_answer_pass_through_unchanged_without_hop_headers(
    stack: Stack,
) -> None:
    base = str(stack.master.make_url("")).rstrip("/")
    response = await stack.master.session.delete(
        URL(base + "/api/accounts/E3/things?b=2&a=1&a=%2F", encoded=True),
        data=b"\x00binary\xff" * 100,
        headers={
            "Content-Type": "application/octet-stream",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "hop",
            "Proxy-Authorization": "Basic abc",
        },
    )
    assert response.status == 418
    seen = await response.json()
    assert seen["method"] == "DELETE"
    assert seen["path"] == "/api/accounts/E3/things"
    assert seen["query"] == "b=2&a=1&a=%2F"
    assert seen["bytes"] == 800
    assert seen["headers"]["x-custom"] == "kept"
    assert seen["headers"]["content-type"] == "application/octet-stream"
    for private in ("x-drop-me", "proxy-authorization", "x-api-key", "authorization"):
        assert private not in seen["headers"]
    assert response.headers["X-Upstream"] == "echo"
    assert "X-Hop" not in response.headers


async def test_bodies_stream_both_ways(stack: Stack) -> None:
    response = await stack.master.get("/api/accounts/E1/slow")
    # The upstream is still in the middle of its answer: only streaming lets this line through.
    assert await response.content.readline() == b"first\n"
    stack.release.set()
    assert await response.content.readline() == b"second\n"

    big = await stack.master.get("/api/accounts/E1/big")
    assert big.headers["X-Big"] == "1"
    assert len(await big.read()) == 3 << 20

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(48):
            yield b"y" * 65536

    # 3 MiB with the slot in the URL streams to the worker (larger than the master's JSON limit).
    streamed = await stack.master.post("/api/accounts/E1/upload", data=upload())
    assert (await streamed.json())["bytes"] == 48 * 65536


async def test_slot_in_the_body_routes_and_no_slot_goes_to_the_first_shard(stack: Stack) -> None:
    by_body = await stack.master.post("/api/notes", json={"slot": "E2", "text": "x"})
    assert (await by_body.json())["path"] == "/api/notes"
    by_role = await stack.master.post("/api/notes", json={"role": {"boundSlot": "E4"}})
    assert by_role.status == 200
    first = await stack.master.get("/api/whatever")
    assert first.status == 404  # the first shard (A1..A50) answered: it has no such route
    bad = await stack.master.post("/api/notes", json={"boundSlot": "E0"})
    assert bad.status == 400
    assert "invalid slot" in (await bad.json())["error"]


@pytest.mark.parametrize("slot", ["A101", "Z1", "B7"])
async def test_slot_nobody_serves_is_404_with_the_reason(stack: Stack, slot: str) -> None:
    response = await stack.master.post(f"/api/accounts/{slot}/connect")
    assert response.status == 404
    assert await response.json() == {"ok": False, "error": f"no shard serves slot {slot}"}


@pytest.mark.parametrize("slot", ["a1", "A0", "A1.5", "..%2FA1", "A" * 300])
async def test_bad_slot_is_400(stack: Stack, slot: str) -> None:
    response = await stack.master.post(f"/api/accounts/{slot}/connect")
    assert response.status == 400
    assert "invalid slot" in (await response.json())["error"]


async def test_shard_down_is_503_with_a_reason_and_hung_shard_never_hangs(stack: Stack) -> None:
    started = time.monotonic()
    down = await stack.master.post("/api/accounts/G1/connect")
    assert down.status == 503
    assert down.headers["Retry-After"]
    assert "shard gone is unavailable: cannot reach it" in (await down.json())["error"]
    hung = await stack.master.get("/api/accounts/H1/hang")
    assert hung.status == 503
    assert "shard hung is unavailable" in (await hung.json())["error"]
    assert time.monotonic() - started < 5  # read timeout is 1 s in this stack


@pytest.mark.parametrize(
    "headers", [{}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}, {"x-api-key": ""}]
)
async def test_api_needs_a_key(stack: Stack, headers: dict[str, str]) -> None:
    client = stack.master
    response = await client.session.post(
        client.make_url("/api/accounts/A1/connect"), headers={"x-api-key": "", **headers}
    )
    assert response.status == 401
    assert (await response.json())["ok"] is False
    # Nothing reached the worker: no session was started.
    status = await (await client.get("/api/accounts/A1/status")).json()
    assert status["status"] == "DISCONNECTED"


async def test_api_key_as_bearer_and_open_paths(stack: Stack) -> None:
    client = stack.master
    url = client.make_url("/api/accounts/A2/status")
    ok = await client.session.get(url, headers={"Authorization": "Bearer second-key"})
    assert ok.status == 200
    for path in ("/health", "/openapi.json"):
        assert (await client.session.get(client.make_url(path))).status == 200
    # Metrics have their own port (`run.serving`): the API port does not serve them.
    assert (await client.session.get(client.make_url("/metrics"))).status == 404


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
async def test_internal_emit_needs_the_master_token(stack: Stack, token: str | None) -> None:
    headers = {"x-master-token": token} if token else {}
    body = {"event": "wa:status", "payload": {"slot": "A1", "status": "CONNECTED"}}
    response = await stack.master.post("/internal/emit", json=body, headers=headers)
    assert response.status == 401
    good = await stack.master.post("/internal/emit", json=body, headers={"x-master-token": TOKEN})
    assert (await good.json()) == {"ok": True, "delivered": True}


async def test_shared_config_reads_and_validated_atomic_writes(stack: Stack) -> None:
    accounts = await (await stack.master.get("/api/accounts")).json()
    assert accounts == {"ok": True, "accounts": [{"slot": "A1", "enabled": True}]}
    new = [{"slot": "A1", "enabled": False, "name": "Sales"}, {"slot": "A60"}]
    written = await stack.master.put("/api/accounts", json=new)
    assert written.status == 200
    on_disk = json.loads((stack.config_dir / "accounts.json").read_text())
    assert on_disk[0] == {"slot": "A1", "enabled": False, "ws": "default", "name": "Sales"}
    assert on_disk[1]["enabled"] is True
    roles = [{"id": 1, "boundSlot": "A2"}]
    assert (await stack.master.put("/api/roles", json=roles)).status == 200
    assert (await (await stack.master.get("/api/roles")).json())["roles"] == roles
    assert sorted(p.name for p in stack.config_dir.iterdir()) == ["accounts.json", "roles.json"]


@pytest.mark.parametrize(
    ("kind", "body", "reason", "code"),
    [
        ("accounts", [{"slot": "a1"}], "invalid slot", 400),
        # Well-formed per the document (no schema says "unique by slot"), yet contradictory.
        ("accounts", [{"slot": "A1"}, {"slot": "A1"}], "more than once", 409),
        ("accounts", {"slot": "A1"}, "valid list", 400),
        ("accounts", [{"enabled": True}], "slot: Field required", 400),
        ("roles", [{"boundSlot": "../A1"}], "invalid slot", 400),
        ("groups", [{"name": "no id"}], "id: Field required", 400),
        ("accounts", "not json", "not JSON", 400),
    ],
)
async def test_bad_config_writes_are_refused_and_change_nothing(
    stack: Stack, kind: str, body: Any, reason: str, code: int
) -> None:
    before = sorted((p.name, p.read_bytes()) for p in stack.config_dir.iterdir())
    if body == "not json":
        response = await stack.master.put(f"/api/{kind}", data=b"{nope")
    else:
        response = await stack.master.put(f"/api/{kind}", json=body)
    assert response.status == code
    assert reason in (await response.json())["error"]
    assert sorted((p.name, p.read_bytes()) for p in stack.config_dir.iterdir()) == before


async def test_too_large_body_is_413(stack: Stack) -> None:
    response = await stack.master.put("/api/accounts", data=b"[" + b" " * (2 << 20) + b"]")
    assert response.status == 413
    assert "too large" in (await response.json())["error"]


async def test_openapi_documents_what_the_master_serves(stack: Stack) -> None:
    document = await (await stack.master.get("/openapi.json")).json()
    served = {
        (route.method, route.resource.canonical)
        for route in stack.master.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    extra = {("*", "/api/{tail}"), ("GET", "/openapi.json")}
    # A documented path's "*" route is its 405 for the methods it does not take.
    refusing = {("*", path) for path in document["paths"]}
    assert {s for s in served if not s[1].startswith("/socket.io/")} - documented - refusing <= (
        extra
    )
    assert documented <= served
    assert refusing <= served
    # Every slot operation of the worker is documented by the master, and reachable.
    worker_doc = await (await stack.master.get("/api/accounts/A1/../../../openapi.json")).json()
    assert worker_doc
    for path, ops in document["paths"].items():
        if path.startswith("/api/accounts/{slot}/"):
            for method in ops:
                url = path.replace("{slot}", "A3").replace("{name}", "x.jpg").replace("{id}", "1")
                answer = await stack.master.request(method.upper(), url, json={})
                assert answer.status not in (404, 405) or (
                    (await answer.json())["error"].startswith("no ")
                ), (method, path)


async def test_every_slot_operation_is_named_as_the_worker_declares_it(stack: Stack) -> None:
    """The master documents each worker operation under the name the shared table gives it
    (its operationId), at the table's method and path: a client (the console) finds an
    operation by that name, so a path renamed in the table moves every caller with it."""
    document = await (await stack.master.get("/openapi.json")).json()
    named = {
        op["operationId"]: (method.upper(), path)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if "operationId" in op
    }
    for endpoint in worker_api.ENDPOINTS:
        if endpoint.path.startswith("/api/accounts/{slot}/"):
            assert named[endpoint.name] == (endpoint.method, endpoint.path)


async def test_the_master_keeps_no_cookies_between_clients(stack: Stack) -> None:
    first = await stack.master.get("/api/accounts/E1/cookie")
    assert "worker-secret" in first.headers["Set-Cookie"]  # passed back to this client
    stack.master.session.cookie_jar.clear()
    later = await (await stack.master.get("/api/accounts/E1/echo")).json()
    assert "cookie" not in later["headers"]  # never replayed by the master to the worker


async def test_documented_paths_refuse_other_methods_and_the_rest_is_still_routed(
    stack: Stack,
) -> None:
    for method, path, allow in (
        ("GET", "/api/accounts/A3/connect", "POST"),
        ("DELETE", "/api/accounts/E3/status", "GET"),  # never reaches the echo shard
        ("POST", "/health", "GET"),
        # A slot in the body does not make a documented path take another method.
        ("POST", "/api/accounts", "GET, PUT"),
    ):
        response = await stack.master.request(method, path, json={"slot": "E2"})
        assert (response.status, response.headers["Allow"]) == (405, allow), (method, path)
        body = await response.json()
        assert body["ok"] is False
        assert "not allowed" in body["error"]
    # Undocumented paths are forwarded as before, by the slot in the URL or in the body.
    routed = await stack.master.request("PATCH", "/api/accounts/E3/things")
    assert (await routed.json())["method"] == "PATCH"
    by_body = await stack.master.post("/api/notes", json={"boundSlot": "E2"})
    assert (await by_body.json())["path"] == "/api/notes"


async def test_the_master_sends_its_worker_token_and_never_a_clients(stack: Stack) -> None:
    """Forwarded requests carry WORKER_TOKENS' first token; one a client sends is dropped."""
    response = await stack.master.get(
        "/api/accounts/E1/echo", headers={WORKER_TOKEN_HEADER: "forged-by-a-client-0123"}
    )
    seen = await response.json()
    assert seen["headers"][WORKER_TOKEN_HEADER] == WORKER_TOKEN


async def test_a_sync_cursor_below_the_horizon_is_410_through_the_master(stack: Stack) -> None:
    """The worker's 410 (its change log was compacted past the cursor) reaches the client as
    it is, with the reason; from the start still answers; /api/status shows the log."""
    worker = stack.workers[0].app
    assert worker is not None
    history = worker[HISTORY]
    for n in range(5):
        chat_id = f"5511900000{n % 2}@s.whatsapp.net"
        record = {"slot": "A1", "wa_message_id": f"M{n}", "chat_id": chat_id, "from": chat_id}
        assert await history.record(Slot.parse("A1"), "in", {**record, "timestamp": 10.0 + n})
    clock = [time.time() + 1000]
    compactor = Compactor(
        worker[DATABASE], 30, EventLog(stream=io.StringIO()), now=lambda: clock[0]
    )
    await compactor.compact()  # a mark now; a window later, everything so far is old
    clock[0] += 31 * DAY_S
    assert (await compactor.compact()).carried == 7  # 5 messages, 2 conversations

    def horizon(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT seq FROM sync_horizon WHERE slot='A1'").fetchone()[0])

    h = await worker[DATABASE].call(horizon)
    refused = await stack.master.get("/api/accounts/A1/sync", params={"since": "1"})
    assert refused.status == 410
    assert await refused.json() == {
        "ok": False,
        "error": f"sync cursor 1 is older than the change log's horizon {h}: "
        "start again without since",
    }
    fresh = await stack.master.get("/api/accounts/A1/sync")
    assert fresh.status == 200
    assert sorted(m["wa_message_id"] for m in (await fresh.json())["messages"]) == [
        f"M{n}" for n in range(5)
    ]
    # A walk through the master: its `N.w` cursors pass as they are, the last page's is plain.
    walked: set[str] = set()
    since: str | None = None
    cursors: list[str] = []
    while True:
        params = {"limit": "3", **({"since": since} if since else {})}
        page = await (await stack.master.get("/api/accounts/A1/sync", params=params)).json()
        walked.update(m["wa_message_id"] for m in page["messages"])
        since = page["next"]
        cursors.append(since)
        if not page["has_more"]:
            break
    assert walked == {f"M{n}" for n in range(5)}
    assert [c.endswith(".w") for c in cursors] == [True] * (len(cursors) - 1) + [False]
    document = await (await stack.master.get("/openapi.json")).json()
    sync = document["paths"]["/api/accounts/{slot}/sync"]["get"]
    assert "410" in sync["responses"]
    (since_param,) = [p for p in sync["parameters"] if p["name"] == "since"]
    assert since_param["schema"]["pattern"] == worker_api.DATA_CURSOR_PATTERN  # one declaration
    status = await (await stack.master.get("/api/status")).json()
    (w1,) = [shard for shard in status["shards"] if shard["id"] == "w1"]
    assert w1["store"]["change_rows"] == 7
    assert w1["store"]["sync_horizon"] == {"slots": 1, "lowest": h, "highest": h}
