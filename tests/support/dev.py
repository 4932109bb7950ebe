"""`wasp dev` as a real process on free ports, for end-to-end tests."""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.support.cluster import ROOT, free_port
from tests.support.processes import ProgramProcess, http_ok

SHARDS = ROOT / "examples" / "dev-shards.yaml"


@dataclass
class DevRun:
    process: ProgramProcess
    master_port: int
    worker_ports: list[int]
    data_dir: Path
    metrics_ports: list[int]  # the master's, then each worker's

    @property
    def master_metrics(self) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[0]}/metrics"

    @property
    def worker_metrics(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.metrics_ports[1:]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.master_port}"

    def session_pids(self) -> set[int]:
        """Every live process of the run's session: `wasp dev`, its children and theirs."""
        return session_members(self.process.pid)


def session_members(sid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            found.add(int(entry.name))
    return found


def quiet_port(count: int = 1) -> int:
    """The first of `count` free ports below the ephemeral range (32768+ on Linux): a client
    probing such a port before its server listens can never be connected to itself."""
    for _ in range(200):
        first = random.randrange(20000, 32000 - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    return free_port()


def start_dev(
    tmp_path: Path,
    *args: str,
    base_port: int | None = None,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> DevRun:
    """`wasp dev` in its own session on free ports; waits for the console line."""
    master_port = quiet_port()
    if base_port is None:
        base_port = quiet_port(2)
        while master_port in (base_port, base_port + 1):
            base_port = quiet_port(2)
    metrics_port = quiet_port(3)
    while {metrics_port, metrics_port + 1, metrics_port + 2} & {
        master_port,
        base_port,
        base_port + 1,
    }:
        metrics_port = quiet_port(3)
    data_dir = tmp_path / "dev-data"
    process = ProgramProcess(
        [
            "dev",
            "--shards-file",
            str(SHARDS),
            "--data-dir",
            str(data_dir),
            "--port",
            str(master_port),
            "--base-port",
            str(base_port),
            "--metrics-base-port",
            str(metrics_port),
            *args,
        ],
        tmp_path / "dev.log",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
    ).start()
    metrics_ports = [metrics_port, metrics_port + 1, metrics_port + 2]
    run = DevRun(process, master_port, [base_port, base_port + 1], data_dir, metrics_ports)
    if wait:
        process.wait_until(
            lambda: "Console" in process.output() and http_ok(f"{run.url}/health"),
            "wasp dev ready",
            timeout=90,
        )
    return run
