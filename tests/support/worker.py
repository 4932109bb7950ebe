"""`wasp worker` as a real process (simulator backend) for tests and benchmarks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.processes import ProgramProcess, http_ok
from wasp.contract import WORKER_TOKEN_HEADER, WorkerEnv

# What test masters send and test workers accept: every test stack runs with the
# worker's credential on, as in a cluster; the tests of its absence set their own.
WORKER_TOKEN = "test-worker-token-5f2c9a71"
CREDENTIAL = {WORKER_TOKEN_HEADER: WORKER_TOKEN}


def start_worker(
    log: Path,
    port: int,
    work_dir: Path,
    config_dir: Path,
    base_env: dict[str, str] | None = None,
    **env: str,
) -> ProgramProcess:
    """Start a worker for A1..A50 (override by variable: SLOT_FROM=..., etc.) and wait for
    /health; the defaults are rendered from the contract the worker reads them with."""
    defaults = WorkerEnv.model_validate(
        {
            "port": port,
            "host": "127.0.0.1",
            "slot_from": "A1",
            "slot_to": "A50",
            "max_active": 10,
            "max_init": 2,
            "warmup_limit": 10,
            "config_dir": config_dir,
            "work_dir": work_dir,
            "backend": "simulator",
            "worker_tokens": WORKER_TOKEN,
            "metrics_port": 0,  # off unless a test asks for a port
            # The simulator bans nobody: the anti-ban pace out of the way (tests of it set theirs).
            "pacing_session_per_minute": 60_000,
            "pacing_session_burst": 1_000,
            "pacing_recipient_per_minute": 60_000,
            "pacing_recipient_burst": 1_000,
        }
    )
    environment = {**(base_env or {"PATH": "/usr/bin:/bin"}), **defaults.as_env(), **env}
    worker = ProgramProcess(["worker"], log, env=environment).start()
    worker.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "worker health")
    return worker


def call_worker(
    method: str, url: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """One JSON call straight to a worker, with the master's credential: (status, answer)."""
    data = json.dumps(body or {}).encode() if method == "POST" else None
    headers = {"Content-Type": "application/json", **CREDENTIAL}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())
