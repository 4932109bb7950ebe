"""Logs an operator can query: JSON lines with an `event`, from every program and library."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore
from wasp_master.state import MASTER

from tests.support.master import start_master
from tests.support.processes import free_port
from tests.support.worker import start_worker
from wasp.logs import JsonLines


def formatted(record: logging.LogRecord) -> dict[str, object]:
    line = JsonLines().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def record(name: str, message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_our_events_keep_their_fields_and_library_lines_get_an_event() -> None:
    ours = formatted(record("wasp.master", json.dumps({"event": "lease_lost", "shard": "w1"})))
    assert (ours["event"], ours["shard"], ours["level"]) == ("lease_lost", "w1", "warning")
    theirs = formatted(record("aiohttp.server", "Error handling request"))
    assert (theirs["event"], theirs["message"]) == ("aiohttp.server", "Error handling request")
    not_an_event = formatted(record("x", '{"no": "event"}'))
    assert not_an_event["message"] == '{"no": "event"}'
    kopf_line = formatted(
        record("kopf.objects", "Handler failed", k8s_ref={"kind": "WhatsAppShard", "name": "w1"})
    )
    assert kopf_line["object"] == {"kind": "WhatsAppShard", "namespace": None, "name": "w1"}


def test_a_traceback_stays_inside_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("wasp.worker", "it failed", exc_info=sys.exc_info())
    line = formatted(failed)
    assert "ValueError: boom" in str(line["traceback"])


def test_master_and_worker_write_only_json_lines_access_and_errors_included(
    tmp_path: Path,
) -> None:
    (tmp_path / "config").mkdir()
    env = {"PATH": os.environ["PATH"]}
    worker_port, master_port = free_port(), free_port()
    worker = start_worker(
        tmp_path / "worker.log",
        worker_port,
        tmp_path / "w1",
        tmp_path / "config",
        base_env=env,
        ACCESS_LOG="1",
    )
    shards = json.dumps([{"id": "w1", "port": worker_port, "from": "A1", "to": "A50"}])
    master = start_master(
        tmp_path / "master.log",
        master_port,
        tmp_path / "config",
        base_env=env,
        ACCESS_LOG="1",
        SHARDS_JSON=shards,
    )
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{master_port}/api/accounts/A1/status").read()
        for port in (master_port, worker_port):  # a malformed request: aiohttp logs an error
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
                assert raw.recv(100).startswith(b"HTTP/1.0 400")
    finally:
        master.stop()
        worker.stop()
    for program in (master, worker):
        lines = [json.loads(line) for line in program.output().splitlines() if line.strip()]
        assert all(isinstance(line, dict) and "event" in line for line in lines)
        events = [line["event"] for line in lines]
        assert "http_access" in events
        errors = [line for line in lines if line["event"] == "aiohttp.server"]
        assert errors
        assert "Traceback" in errors[0]["traceback"]
    accessed = [json.loads(line) for line in master.output().splitlines() if "A1/status" in line]
    assert accessed[0]["status"] == 200


async def test_a_failing_workspace_refresh_is_logged_and_keeps_the_last_map(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    accounts = config_dir / "accounts.json"
    accounts.write_text('[{"slot": "A1", "ws": "sales"}]')
    config = MasterConfig(config_dir=config_dir)
    master = build_app(config, ShardDirectory(), DirectoryStore(config_dir))[MASTER]
    await master.refresh_workspaces()
    assert master.workspace_of("A1") == "sales"
    accounts.unlink()
    accounts.mkdir()  # a real failure: the store cannot read a directory as its file
    with caplog.at_level(logging.WARNING, logger="wasp.master"):
        await master.refresh_workspaces()
    assert master.workspace_of("A1") == "sales"
    failed = [json.loads(r.getMessage()) for r in caplog.records]
    assert [f["event"] for f in failed] == ["workspaces_refresh_failed"]
