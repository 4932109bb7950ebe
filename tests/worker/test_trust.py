"""Only the master may call a worker: every route but the probes takes its token.

Each route is called straight at the worker, as any pod of a cluster whose network
plugin ignores NetworkPolicy could: without the token, with a wrong one, and with
the one that was valid before a rotation. Each is a 401 with the reason, and the
worker's state (sessions, queue, history, live events, files) is the same after.
A rotation (two tokens, then one) keeps a master in front working throughout.
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_master.app import build_app as build_master
from wasp_master.config import MasterConfig
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore
from wasp_master.state import MASTER
from wasp_worker.app import build_app
from wasp_worker.backends.simulator import phone_of
from wasp_worker.events import EventLog
from wasp_worker.state import FEED, SESSIONS

from tests.worker.test_worker_http import config
from wasp import worker_api
from wasp.contract import WORKER_TOKEN_HEADER
from wasp.openapi import Endpoint, openapi
from wasp.slots import Slot, SlotRange

Client = TestClient[Any, Any]
NEW = "new-token-3f8a1c9e5b7d"
OLD = "old-token-9d2e7b4a6c1f"
WRONG = "not-a-token-of-this-worker"
TO = phone_of(Slot.parse("A2"))
BODIES: dict[str, Any] = {
    "send": {"to": TO, "text": "hi"},
    "schedule": {"to": TO, "text": "later", "send_at": 4_000_000_000},
    "openChat": {"chat_id": TO},
    "pair": {"phone": "4915112345678"},
}
PROTECTED = [e for e in worker_api.ENDPOINTS if e.path not in worker_api.OPEN]


def concrete(path: str) -> str:
    return path.replace("{slot}", "A1").replace("{name}", "m1.jpg").replace("{id}", "1")


def snapshot(client: Client, work_dir: Path) -> dict[str, Any]:
    """What a call that got through could change."""
    app = client.app
    assert app is not None
    sessions, feed = app[SESSIONS], app[FEED]
    with sqlite3.connect(work_dir / "queue.sqlite3") as store:  # the shard's one database
        queued = store.execute("SELECT * FROM outbound").fetchall()
        tables = [r[0] for r in store.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: store.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables}
    return {
        "sessions": {str(slot): state.status for slot, state in sessions.states.items()},
        "queue": queued,
        "tables": rows,  # history, outbox, ...
        "events": (feed.epoch, feed._seq),  # every live event takes the next number
        "files": sorted(
            str(p.relative_to(work_dir))
            for p in work_dir.rglob("*")
            if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock"))
        ),
    }


async def serve_worker(tmp_path: Path, *tokens: str, **overrides: Any) -> Client:
    app = build_app(
        config(tmp_path, worker_tokens=",".join(tokens), **overrides),
        EventLog(stream=io.StringIO()),
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def rotated(tmp_path: Path) -> AsyncIterator[Client]:
    """A worker that accepted NEW and OLD (A1 logged in with OLD), restarted with NEW only."""
    before = await serve_worker(tmp_path, NEW, OLD)
    try:
        for step in ("connect", "scan"):
            answer = await before.post(
                f"/api/accounts/A1/{step}", headers={WORKER_TOKEN_HEADER: OLD}
            )
            assert answer.status == 200, await answer.text()
    finally:
        await before.close()
    after = await serve_worker(tmp_path, NEW)
    try:
        # A1 logged in, so it comes back by itself: let it settle before anything is compared.
        assert after.app is not None
        sessions = after.app[SESSIONS]
        for _ in range(100):
            state = sessions.states.get(Slot.parse("A1"))
            if state is not None and state.status == "CONNECTED":
                break
            await asyncio.sleep(0.05)
        yield after
    finally:
        await after.close()


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: e.name)
async def test_each_route_refuses_a_caller_without_the_masters_token(
    rotated: Client, tmp_path: Path, endpoint: Endpoint
) -> None:
    work_dir = tmp_path / "data"
    path = concrete(endpoint.path)
    body = BODIES.get(endpoint.name)
    before = snapshot(rotated, work_dir)
    cases = {
        "missing": {},
        "wrong": {WORKER_TOKEN_HEADER: WRONG},
        "old": {WORKER_TOKEN_HEADER: OLD},
    }
    for case, headers in cases.items():
        answer = await rotated.request(endpoint.method, path, json=body, headers=headers)
        assert answer.status == 401, (case, await answer.text())
        reason = (await answer.json())["error"]
        expected = "missing" if case == "missing" else "invalid"
        assert reason.startswith(f"{expected} {WORKER_TOKEN_HEADER}"), (case, reason)
        assert WRONG not in reason  # a token is never echoed
        assert OLD not in reason
    assert snapshot(rotated, work_dir) == before
    # The current token still gets through (so the 401s above were the token's doing).
    ok = await rotated.request(endpoint.method, path, json=body, headers={WORKER_TOKEN_HEADER: NEW})
    assert ok.status != 401, await ok.text()


async def test_probes_answer_anyone_and_unknown_paths_need_the_token(rotated: Client) -> None:
    assert (await rotated.get("/health")).status == 200
    assert (await rotated.get("/ready")).status == 200
    for path in ("/openapi.json", "/metrics", "/nothing/here", "/health/", "/api/accounts/A1"):
        assert (await rotated.get(path)).status == 401, path
    assert (await rotated.get("/metrics", headers={WORKER_TOKEN_HEADER: NEW})).status == 404


async def test_a_worker_without_tokens_accepts_no_caller_unless_insecure(tmp_path: Path) -> None:
    closed = await serve_worker(tmp_path / "closed")
    try:
        answer = await closed.post("/api/accounts/A1/connect", headers={WORKER_TOKEN_HEADER: NEW})
        assert answer.status == 401
        assert "no WORKER_TOKENS configured" in (await answer.json())["error"]
        assert (await closed.get("/health")).status == 200
    finally:
        await closed.close()
    opened = await serve_worker(tmp_path / "open", insecure=True)
    try:
        assert (await opened.post("/api/accounts/A1/connect")).status == 200
    finally:
        await opened.close()


def test_wasp_worker_does_not_start_without_tokens(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "SLOT_FROM": "A1",
        "SLOT_TO": "A5",
        "WORKDIR": str(tmp_path),
        "CONFIGDIR": str(tmp_path),
        "BACKEND": "simulator",
        "PORT": "0",
        "METRICS_PORT": "0",
    }
    started = subprocess.run(
        [sys.executable, "-m", "wasp.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "WORKER_TOKENS is not set" in started.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "wasp.cli", "worker"],
        env={**env, "WORKER_TOKENS": "tiny-secret"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "WORKER_TOKENS: token 1 of 1 must be at least 16" in bad.stderr
    assert "tiny-secret" not in bad.stderr + bad.stdout


async def test_rotation_keeps_the_master_working_and_retires_the_old_token(
    tmp_path: Path,
) -> None:
    """old → (worker: old,new) → (master: new,old) → (worker: new): every step answers."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    work = tmp_path / "w1"
    steps = [((OLD,), (OLD,)), ((OLD, NEW), (OLD,)), ((OLD, NEW), (NEW, OLD)), ((NEW,), (NEW, OLD))]
    for at, (worker_tokens, master_tokens) in enumerate(steps):
        worker = await serve_worker(work, *worker_tokens, config_dir=config_dir)
        directory = ShardDirectory()
        url = str(worker.make_url("")).rstrip("/")
        directory.put(ShardRoute("w1", url, SlotRange.parse("A1", "A50")))
        master_config = MasterConfig(config_dir=config_dir, worker_tokens=master_tokens)
        master_app = build_master(master_config, directory, DirectoryStore(config_dir))
        try:
            async with TestClient(TestServer(master_app)) as master:
                answer = await master.post("/api/accounts/A1/connect")
                assert answer.status == 200, (at, await answer.text())
                status = await master.get("/api/accounts/A1/status")
                assert status.status == 200, at
                # The master's long poll of /events gets through too.
                hub = master_app[MASTER].hub
                for _ in range(250):
                    if hub.running.get("w1"):
                        break
                    await asyncio.sleep(0.02)
                assert hub.running.get("w1"), at
            direct = await worker.get("/api/accounts/A1/status", headers={WORKER_TOKEN_HEADER: OLD})
            assert direct.status == (401 if OLD not in worker_tokens else 200), at
        finally:
            await worker.close()


async def test_the_documents_say_who_may_call(rotated: Client) -> None:
    """The worker's document declares the token and the 401 on every protected operation;
    the master's declares neither on the same operations (clients show it API keys)."""
    from wasp_master.app import API as MASTER_API
    from wasp_master.app import all_routes

    document = await (await rotated.get("/openapi.json", headers={WORKER_TOKEN_HEADER: NEW})).json()
    scheme = document["components"]["securitySchemes"]["WorkerToken"]
    assert scheme == {"type": "apiKey", "in": "header", "name": WORKER_TOKEN_HEADER}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path in worker_api.OPEN:
                assert "security" not in operation, path
                assert "401" not in operation["responses"], path
            else:
                assert operation["security"] == [{"WorkerToken": []}], path
                assert "401" in operation["responses"], path
    master = openapi(all_routes(MasterConfig()), MASTER_API)
    assert "securitySchemes" not in master["components"]
    status = master["paths"]["/api/accounts/{slot}/status"]["get"]
    assert "401" not in status["responses"]
    assert "/metrics" not in master["paths"]
    assert "/metrics" not in document["paths"]
