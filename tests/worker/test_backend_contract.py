"""One contract, both backends: what a client sees that offline neonize can also produce."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.events import EventLog
from wasp_worker.state import SESSIONS

from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config

Client = TestClient[Any, Any]


@pytest.fixture(params=["simulator", "neonize"])
async def worker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    app = build_app(
        config(tmp_path, backend=request.param, max_active=2), EventLog(stream=io.StringIO())
    )
    async with TestClient(TestServer(app), headers=CREDENTIAL) as client:
        yield client


async def test_connect_is_held_and_counts_against_capacity(worker: Client) -> None:
    first = await worker.post("/api/accounts/A1/connect")
    assert first.status == 200
    assert (await first.json())["status"] in ("CONNECTING", "DISCONNECTED")
    assert (await worker.post("/api/accounts/A2/connect")).status == 200
    full = await worker.post("/api/accounts/A3/connect")
    assert full.status == 429
    assert await full.json() == {"ok": False, "error": "worker capacity full"}
    health = await (await worker.get("/health")).json()
    assert health["worker"]["active"] == 2


async def test_destroy_frees_the_place_and_logout_wipes_the_auth(worker: Client) -> None:
    await worker.post("/api/accounts/A1/connect")
    await worker.post("/api/accounts/A2/connect")
    assert (await worker.post("/api/accounts/A1/destroy")).status == 200
    assert (await (await worker.get("/api/accounts/A1/status")).json())["status"] == (
        "DISCONNECTED"
    )
    assert (await (await worker.get("/health")).json())["worker"]["active"] == 1
    assert (await worker.post("/api/accounts/A2/logout")).status == 200
    work_dir = worker.app[SESSIONS].config.work_dir
    assert not (work_dir / "auth" / "A2").exists() or not any((work_dir / "auth" / "A2").iterdir())
    assert (await worker.post("/api/accounts/A2/logout")).status == 404  # no session now


async def test_slot_rules_are_the_same(worker: Client) -> None:
    assert (await worker.post("/api/accounts/A51/connect")).status == 409
    assert (await worker.post("/api/accounts/a1/connect")).status == 400
    assert (await worker.post("/api/accounts/A1/pair", json={"phone": "5511999999"})).status == (
        409
    )
