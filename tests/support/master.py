"""`wasp master` as a real process for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import ProgramProcess, http_ok
from tests.support.worker import WORKER_TOKEN


def start_master(
    log: Path,
    port: int,
    config_dir: Path,
    *args: str,
    base_env: dict[str, str] | None = None,
    **env: str,
) -> ProgramProcess:
    """Start a master (local mode unless `args` say otherwise) and wait for /health."""
    environment = {
        **(base_env or {"PATH": "/usr/bin:/bin"}),
        "PORT_MASTER": str(port),
        "HOST": "127.0.0.1",
        "CONFIGDIR": str(config_dir),
        "WORKER_TOKENS": WORKER_TOKEN,  # what test workers accept
        "METRICS_PORT": "0",  # off unless a test asks for a port
        **env,
    }
    master = ProgramProcess(["master", *args], log, env=environment).start()
    master.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "master health")
    return master
