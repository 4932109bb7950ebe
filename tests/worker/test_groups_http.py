"""Groups and contacts on one worker, for both backends: every operation on a session that
is not logged in is a 409 naming its state, and a backend without the operations is a 501
naming the operation (no backend lacks them now: a stand-in plays that part)."""

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
GROUP = "/api/accounts/A1/groups/120363025246125486@g.us"
PEER = "5511999999999"
# Every operation, with valid input: (operation, method, path, body).
OPERATIONS: list[tuple[str, str, str, Any]] = [
    ("groups", "GET", "/api/accounts/A1/groups", None),
    ("createGroup", "POST", "/api/accounts/A1/groups", {"name": "T", "participants": [PEER]}),
    ("group", "GET", GROUP, None),
    ("renameGroup", "PATCH", GROUP, {"name": "T2"}),
    (
        "groupParticipants",
        "POST",
        f"{GROUP}/participants",
        {"action": "add", "participants": [PEER]},
    ),
    ("groupInvite", "GET", f"{GROUP}/invite?revoke=true", None),
    ("leaveGroup", "POST", f"{GROUP}/leave", None),
    ("contactsCheck", "POST", "/api/accounts/A1/contacts/check", {"numbers": [PEER]}),
    ("contactPicture", "GET", f"/api/accounts/A1/contacts/{PEER}/picture", None),
    ("contactInfo", "GET", f"/api/accounts/A1/contacts/{PEER}/info", None),
    ("blockContact", "POST", f"/api/accounts/A1/contacts/{PEER}/block", None),
    ("unblockContact", "POST", f"/api/accounts/A1/contacts/{PEER}/unblock", None),
]


@pytest.fixture(params=["simulator", "neonize"])
async def worker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    app = build_app(config(tmp_path, backend=request.param), EventLog(stream=io.StringIO()))
    async with TestClient(TestServer(app), headers=CREDENTIAL) as client:
        yield client


async def call(worker: Client, method: str, path: str, body: Any) -> tuple[int, str]:
    answer = await worker.request(method, path, json=body if body is not None else None)
    return answer.status, (await answer.json()).get("error", "")


async def test_a_session_not_logged_in_is_a_409_naming_its_state(worker: Client) -> None:
    for operation, method, path, body in OPERATIONS:
        assert await call(worker, method, path, body) == (
            409,
            f"{operation} needs the session logged in; slot A1 is not started",
        )
    assert (await worker.post("/api/accounts/A1/connect")).status == 200
    state = worker.app[SESSIONS].states[worker.app[SESSIONS].own("A1")].status
    assert state != "CONNECTED"  # a QR (simulator) or an offline connect (neonize)
    for operation, method, path, body in OPERATIONS:
        status, error = await call(worker, method, path, body)
        assert (status, error) == (
            409,
            f"{operation} needs the session logged in; slot A1 is {state}",
        )


async def test_a_backend_without_the_operations_is_a_501_naming_each(worker: Client) -> None:
    worker.app[SESSIONS].backend = object()  # a stand-in without them
    for operation, method, path, body in OPERATIONS:
        status, error = await call(worker, method, path, body)
        assert status == 501
        assert error.startswith(f"{operation}: ")
