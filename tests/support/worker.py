"""`wasp worker` as a real process (simulator backend) for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import ProgramProcess, http_ok


def start_worker(
    log: Path,
    port: int,
    work_dir: Path,
    config_dir: Path,
    base_env: dict[str, str] | None = None,
    **env: str,
) -> ProgramProcess:
    """Start a worker for A1..A50 (override with SLOT_FROM=..., etc.) and wait for /health."""
    environment = {
        **(base_env or {"PATH": "/usr/bin:/bin"}),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "SLOT_FROM": "A1",
        "SLOT_TO": "A50",
        "MAX_ACTIVE": "10",
        "MAX_INIT": "2",
        "WARMUP_LIMIT": "10",
        "CONFIGDIR": str(config_dir),
        "WORKDIR": str(work_dir),
        "BACKEND": "simulator",
        **env,
    }
    worker = ProgramProcess(["worker"], log, env=environment).start()
    worker.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "worker health")
    return worker
