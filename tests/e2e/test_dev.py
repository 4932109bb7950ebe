"""`wasp dev` as a user runs it: master and both workers answer, and a SIGTERM to
`wasp dev` alone leaves no process of the run behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.dev import quiet_port, start_dev
from tests.support.processes import http_text


def status_of(method: str, url: str) -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_dev_runs_master_and_workers_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = start_dev(tmp_path)
    try:
        health = json.loads(http_text(f"{run.url}/health"))
        assert [(w["id"], w["from"], w["to"]) for w in health["workers"]] == [
            ("w1", "A1", "A50"),
            ("w2", "A51", "A100"),
        ]
        for port, first in zip(run.worker_ports, ("A1", "A51"), strict=True):
            worker = json.loads(http_text(f"http://127.0.0.1:{port}/health"))["worker"]
            assert worker["slotFrom"] == first
        console = http_text(f"{run.url}/")
        assert "<title>wasp" in console
        # Both workers answer through the master; the seeded config is served.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shards = json.loads(http_text(f"{run.url}/api/shards"))["shards"]
            if all(s["running"] for s in shards):
                break
            time.sleep(0.2)
        assert [s["running"] for s in shards] == [True, True]
        accounts = json.loads(http_text(f"{run.url}/api/accounts"))["accounts"]
        assert {"A1", "A51"} <= {a["slot"] for a in accounts}
        # What the README's tour points at.
        # Metrics on their own ports; the API ports serve none.
        master_metrics = http_text(run.master_metrics)
        for name in ("wasp_master_shard_sessions_active", "wasp_master_socketio_clients"):
            assert name in master_metrics
        worker_metrics = http_text(run.worker_metrics[0])
        for name in ("wasp_worker_sessions_active", "wasp_worker_queue_depth"):
            assert name in worker_metrics
        assert status_of("GET", f"{run.url}/metrics") == 404
        # The master passes the run's worker token, made without the user: a worker's own
        # port refuses a caller without it, and the same call through the master works.
        worker = f"http://127.0.0.1:{run.worker_ports[0]}"
        assert status_of("POST", f"{worker}/api/accounts/A1/connect") == 401
        assert status_of("GET", f"{worker}/api/accounts/A1/status") == 401
        assert status_of("POST", f"{run.url}/api/accounts/A1/connect") == 200
        pids = run.session_pids()
        assert len(pids) >= 4, pids  # wasp dev, master, two workers
    finally:
        os.kill(run.process.pid, signal.SIGTERM)  # wasp dev only: it must stop the rest
        asked = time.monotonic()
        assert run.process.process is not None
        code = run.process.process.wait(30)
        took = time.monotonic() - asked
    assert code == 0, run.process.output()[-3000:]
    # Gracefully, not by the SIGKILL after the grace period (a worker's shutdown must not
    # wait for the master's long-poll of its /events).
    assert took < 8, f"stopping took {took:.1f} s"
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not left, f"left running: {left}"
    assert not run.session_pids()
    output = run.process.output()
    assert "ready    master" in output
    assert "wasp dev: stopped" in output


def test_dev_exits_with_the_log_tail_of_a_child_that_cannot_start(tmp_path: Path) -> None:
    # w1's port is taken; w2's, the next one, is free and below the ephemeral range (a
    # port the kernel hands out could be w2's, and w2 would fail first).
    taken = quiet_port(2)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))
    blocker.listen()
    try:
        run = start_dev(tmp_path, base_port=taken, wait=False)
        assert run.process.process is not None
        code = run.process.process.wait(60)
    finally:
        blocker.close()
    output = run.process.output()
    assert code == 1, output
    assert "w1 exited with code" in output
    assert "address already in use" in output.lower() or "errno 98" in output.lower(), output
    assert not run.session_pids()
