"""Scoped API keys through the master: every kind of route and Socket.IO room
against keys of every scope, with real simulator workers behind the master, a
keys file holding only hashes, and rotation by rewriting that file."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore
from wasp_master.state import MASTER
from wasp_worker.app import build_app as build_worker
from wasp_worker.events import EventLog

from tests.support.worker import WORKER_TOKEN
from tests.worker.test_worker_http import config as worker_config
from wasp.cli import main as cli
from wasp.slots import SlotRange

Client = TestClient[Any, Any]
TOKEN = "scopes-master-token"
SHARDS = (("w1", "A1", "A50"), ("w2", "A51", "A100"))
ACCOUNTS = [
    {"slot": "A1", "ws": "sales"},
    {"slot": "A60", "ws": "support"},
]
ROLES = [{"name": "seller", "boundSlot": "A1"}, {"name": "helper", "boundSlot": "A60"}]
# Key id -> (operations, scope). One key per kind of scope and of operation set.
KEYS: dict[str, dict[str, Any]] = {
    "admin": {"operations": ["admin"]},
    "reader": {"operations": ["read"]},
    "configurer": {"operations": ["read", "config"]},
    "sales": {"operations": ["read", "send", "session"], "workspaces": ["sales"]},
    "range": {"operations": ["read", "send", "session"], "slots": ["A1-A50"]},
    "sender": {"operations": ["send"], "slots": ["A1-A50"]},
}
IN, OUT = "A1", "A60"  # in the scoped keys' scope (workspace sales, A1-A50), and not

# Slot routes, one per operation, as (method, path, body).
SLOT_ROUTES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "read": ("GET", "/api/accounts/{slot}/status", None),
    "send": ("POST", "/api/accounts/{slot}/send", {"to": "15550001111", "text": "hi"}),
    "session": ("POST", "/api/accounts/{slot}/destroy", None),
}
# Which (route kind, slot) each key may use; everything else is a 403.
ALLOWED: dict[str, set[tuple[str, str]]] = {
    "admin": {(op, s) for op in SLOT_ROUTES for s in (IN, OUT)},
    "reader": {("read", IN), ("read", OUT)},
    "configurer": {("read", IN), ("read", OUT)},
    "sales": {("read", IN), ("send", IN), ("session", IN)},
    "range": {("read", IN), ("send", IN), ("session", IN)},
    "sender": {("send", IN)},
}
# What GET /api/accounts and /api/shards show each key (None: refused), and PUT config.
SEES_ACCOUNTS = {
    "admin": ["A1", "A60"],
    "reader": ["A1", "A60"],
    "configurer": ["A1", "A60"],
    "sales": ["A1"],
    "range": ["A1"],
    "sender": None,
}
SEES_SHARDS = {
    "admin": ["w1", "w2"],
    "reader": ["w1", "w2"],
    "configurer": ["w1", "w2"],
    "sales": ["w1"],
    "range": ["w1"],
    "sender": None,
}
WRITES_CONFIG = {"admin", "configurer"}
# Socket.IO: which joins each key is let into.
JOINS = {
    "admin": {"all", "ws:sales", "ws:support"},
    "reader": {"all", "ws:sales", "ws:support"},
    "configurer": {"all", "ws:sales", "ws:support"},
    "sales": {"ws:sales"},
    "range": set(),
    "sender": set(),
}


def secret(key_id: str) -> str:
    return f"key-{key_id}-0123456789abcdef"


def write_keys(path: Path, keys: dict[str, str], scopes: dict[str, dict[str, Any]]) -> None:
    """A keys file as `wasp keys new` makes them: hashes, never keys; replaced atomically
    (a mounted Secret changes by a symlink swap, which is atomic too)."""
    from wasp_master.keys import hash_key

    records = [{"id": i, "hash": hash_key(keys[i]), **scopes[i]} for i in keys]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"keys": records}))
    os.replace(tmp, path)


@dataclass
class Stack:
    client: Client
    url: str
    keys_file: Path
    forwarded: list[str] = field(default_factory=list)

    async def call(
        self, key: str, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        response = await self.client.request(method, path, json=body, headers={"x-api-key": key})
        text = await response.text()
        return response.status, json.loads(text) if text.startswith("{") else {"text": text}


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "accounts.json").write_text(json.dumps(ACCOUNTS))
    (config_dir / "roles.json").write_text(json.dumps(ROLES))
    (config_dir / "groups.json").write_text('[{"id": 1}]')
    workers = [
        TestServer(
            build_worker(
                worker_config(tmp_path / name, slot_from=a, slot_to=b, config_dir=config_dir),
                EventLog(stream=io.StringIO()),
            )
        )
        for name, a, b in SHARDS
    ]
    directory = ShardDirectory()
    for server, (name, a, b) in zip(workers, SHARDS, strict=True):
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        directory.put(ShardRoute(name, url, SlotRange.parse(a, b)))
    keys_file = tmp_path / "keys.yaml"
    write_keys(keys_file, {i: secret(i) for i in KEYS}, KEYS)
    config = MasterConfig(
        worker_tokens=(WORKER_TOKEN,),
        master_token=TOKEN,
        api_keys_file=keys_file,
        keys_poll_s=0.05,
        config_dir=config_dir,
        health_interval_s=0.2,
    )
    app = build_app(config, directory, DirectoryStore(config_dir))
    async with TestClient(TestServer(app)) as client:
        built = Stack(client, str(client.make_url("")).rstrip("/"), keys_file)
        proxy = app[MASTER].proxy
        forward = proxy.forward

        async def spy(request: web.Request, route: ShardRoute, body: bytes | None) -> Any:
            built.forwarded.append(route.id)
            return await forward(request, route, body)

        monkeypatch.setattr(proxy, "forward", spy)
        yield built
    for server in workers:
        await server.close()


@pytest.mark.parametrize("slot", [IN, OUT])
@pytest.mark.parametrize("kind", list(SLOT_ROUTES))
@pytest.mark.parametrize("key_id", list(KEYS))
async def test_slot_routes(stack: Stack, key_id: str, kind: str, slot: str) -> None:
    method, path, body = SLOT_ROUTES[kind]
    status, answer = await stack.call(secret(key_id), method, path.format(slot=slot), body)
    if (kind, slot) in ALLOWED[key_id]:
        assert status not in (401, 403), answer
        assert stack.forwarded == ["w1" if slot == IN else "w2"]
    else:
        assert status == 403, answer
        assert answer["ok"] is False
        assert f"key {key_id!r}" in answer["error"]
        assert kind in answer["error"] or slot in answer["error"], answer["error"]
        assert stack.forwarded == []  # refused before routing: no worker saw it


@pytest.mark.parametrize("key_id", list(KEYS))
async def test_config_read_shows_a_scoped_key_its_own_accounts(stack: Stack, key_id: str) -> None:
    status, answer = await stack.call(secret(key_id), "GET", "/api/accounts")
    expected = SEES_ACCOUNTS[key_id]
    if expected is None:
        assert (status, answer["ok"]) == (403, False)
        assert "may not read" in answer["error"]
    else:
        assert status == 200, answer
        assert [a["slot"] for a in answer["accounts"]] == expected


@pytest.mark.parametrize("key_id", list(KEYS))
async def test_config_write_needs_config_and_no_scope(stack: Stack, key_id: str) -> None:
    status, answer = await stack.call(secret(key_id), "PUT", "/api/accounts", ACCOUNTS)
    if key_id in WRITES_CONFIG:
        assert status == 200, answer
    else:
        assert status == 403, answer
        assert answer == {"ok": False, "error": answer["error"]}
        assert "may not config" in answer["error"]


@pytest.mark.parametrize("key_id", list(KEYS))
async def test_shards_shows_a_scoped_key_the_shards_of_its_slots(stack: Stack, key_id: str) -> None:
    status, answer = await stack.call(secret(key_id), "GET", "/api/shards")
    expected = SEES_SHARDS[key_id]
    if expected is None:
        assert status == 403, answer
    else:
        assert status == 200, answer
        assert [s["id"] for s in answer["shards"]] == expected


async def test_roles_by_bound_slot_and_groups_only_unscoped(stack: Stack) -> None:
    status, answer = await stack.call(secret("sales"), "GET", "/api/roles")
    assert (status, [r["name"] for r in answer["roles"]]) == (200, ["seller"])
    status, answer = await stack.call(secret("range"), "GET", "/api/groups")
    assert status == 403
    assert "groups belong to no slot" in answer["error"]
    status, answer = await stack.call(secret("reader"), "GET", "/api/groups")
    assert (status, answer["groups"]) == (200, [{"id": 1}])


async def test_undeclared_paths_need_admin_even_with_a_slot_in_the_body(stack: Stack) -> None:
    status, answer = await stack.call(secret("range"), "POST", "/api/whatever", {"slot": "A1"})
    assert status == 403
    assert "may not admin" in answer["error"]
    assert stack.forwarded == []
    status, _ = await stack.call(secret("admin"), "POST", "/api/whatever", {"slot": "A1"})
    assert status not in (401, 403)
    assert stack.forwarded == ["w1"]


async def test_a_bad_slot_for_a_scoped_key_is_bad_input(stack: Stack) -> None:
    status, answer = await stack.call(secret("range"), "GET", "/api/accounts/a1/status")
    assert status == 400
    assert "invalid slot" in answer["error"]


async def test_unknown_and_missing_keys_are_401(stack: Stack) -> None:
    status, answer = await stack.call("not-a-key", "GET", "/api/shards")
    assert (status, answer) == (401, {"ok": False, "error": "invalid API key"})
    response = await stack.client.get("/api/shards")
    assert response.status == 401


async def sio_client(stack: Stack, key: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(stack.url, auth={"apiKey": key}, transports=["websocket"])
    return client


@pytest.mark.parametrize("key_id", list(KEYS))
async def test_socketio_joins(stack: Stack, key_id: str) -> None:
    client = await sio_client(stack, secret(key_id))
    try:
        for room, ask in (
            ("all", {"all": True}),
            ("ws:sales", {"ws": "sales"}),
            ("ws:support", {"ws": "support"}),
        ):
            answer = await client.call("join", ask, timeout=5)
            if room in JOINS[key_id]:
                assert answer["ok"] is True, answer
                assert answer["rooms"] == [room]
            else:
                assert answer["ok"] is False, (room, answer)
                assert f"key {key_id!r}" in answer["error"]
    finally:
        await client.disconnect()


async def test_socketio_refuses_a_connection_without_a_valid_key(stack: Stack) -> None:
    for key in ("nope", ""):
        client = socketio.AsyncClient(reconnection=False)
        refusals: list[Any] = []
        client.on("connect_error", refusals.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(stack.url, auth={"apiKey": key}, transports=["websocket"])
        assert refusals, key
        assert "API key" in str(refusals[0]), refusals


async def test_a_workspace_key_gets_its_workspace_events_only(stack: Stack) -> None:
    got: list[str] = []
    client = await sio_client(stack, secret("sales"))
    client.on("message:in", lambda payload: got.append(payload["slot"]))
    try:
        assert (await client.call("join", {"ws": "sales"}, timeout=5))["ok"]
        for n, slot in enumerate((OUT, IN)):
            response = await stack.client.post(
                "/internal/emit",
                json={"event": "message:in", "payload": {"slot": slot}, "id": f"t.{n}"},
                headers={"x-master-token": TOKEN},
            )
            assert response.status == 200
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the out-of-scope event, had it been sent, is in by now
        assert got == [IN]
    finally:
        await client.disconnect()


async def test_rotation_without_restart(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    old, new = secret("reader"), "rotated-reader-key-fedcba9876543210"
    assert (await stack.call(old, "GET", "/api/shards"))[0] == 200
    listener = await sio_client(stack, old)
    assert (await listener.call("join", {"all": True}, timeout=5))["ok"]

    write_keys(stack.keys_file, {"reader": new}, {"reader": KEYS["reader"]})
    await until(lambda: stack.call(old, "GET", "/api/shards"), 401)
    assert (await stack.call(new, "GET", "/api/shards"))[0] == 200
    await until_true(lambda: not listener.connected)  # its key is gone: disconnected

    # A broken file keeps the last good keys and says why, without any key in the line.
    with caplog.at_level(logging.ERROR, logger="wasp.master"):
        stack.keys_file.write_text(f"keys: [{{id: x, hash: {new}}}")
        await until_true(lambda: "api_keys_invalid" in caplog.text)
        stack.keys_file.write_text(yaml.safe_dump({"keys": [{"id": "x", "hash": new}]}))
        await until_true(lambda: caplog.text.count("api_keys_invalid") >= 2)
    assert (await stack.call(new, "GET", "/api/shards"))[0] == 200
    line = json.loads(caplog.records[-1].getMessage())
    assert line["event"] == "api_keys_invalid"
    assert line["kept"] == ["reader"]
    assert new not in caplog.text


async def test_keys_made_by_the_cli_are_stored_hashed_and_work(stack: Stack) -> None:
    made = CliRunner().invoke(
        cli, ["keys", "new", "--id", "crm-a", "--ops", "read,send", "--slots", "A51-A100"]
    )
    assert made.exit_code == 0, made.output
    key = made.stderr.strip().splitlines()[-1]
    assert key.startswith("wasp_")
    assert len(key) > 40
    stack.keys_file.write_text("keys:\n" + made.stdout)
    assert key not in stack.keys_file.read_text()  # only its hash is stored
    assert "sha256:" in stack.keys_file.read_text()
    await until(lambda: stack.call(key, "GET", "/api/accounts/A60/status"), 200)
    status, answer = await stack.call(key, "GET", "/api/accounts/A1/status")
    assert status == 403
    assert answer["error"] == "slot A1 is outside key 'crm-a''s slots A51-A100"


async def until(call: Any, status: int) -> None:
    """Poll a call until it answers `status` (5 s at most)."""
    for _ in range(100):
        if (await call())[0] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {status} within 5 s")


async def until_true(check: Any) -> None:
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not true within 5 s")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"operations": ["config"], "workspaces": ["a"]}, "`config` and `admin` are for keys"),
        ({"operations": ["admin"], "slots": ["A1-A5"]}, "`config` and `admin` are for keys"),
        ({"operations": ["read"], "slots": ["A1"], "workspaces": ["a"]}, "not both"),
        ({"operations": ["read"], "slots": ["A5-A1"]}, "comes after the last"),
        ({"operations": []}, "at least 1"),
        ({"operations": ["write"]}, "operations.0"),
    ],
)
def test_a_record_that_cannot_be_right_is_refused(record: dict[str, Any], problem: str) -> None:
    from wasp_master.keys import KeysError, hash_key, parse_keys

    text = json.dumps({"keys": [{"id": "x", "hash": hash_key("k"), **record}]})
    with pytest.raises(KeysError, match=problem):
        parse_keys(text, "keys.json")
