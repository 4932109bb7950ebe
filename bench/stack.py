"""One simulator worker (w1, A1..A50) and a local-mode master in front of it, for benchmarks."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.cluster import free_port
from tests.support.master import start_master
from tests.support.processes import ProgramProcess
from tests.support.worker import start_worker


def start_pair(tmp: Path, programs: list[ProgramProcess], **master_env: str) -> tuple[int, int]:
    """Start both (appended to `programs`, for the caller to stop); return their ports."""
    env = {"PATH": os.environ["PATH"]}
    (tmp / "config").mkdir(exist_ok=True)
    worker_port, master_port = free_port(), free_port()
    programs.append(
        start_worker(
            tmp / "worker.log",
            worker_port,
            tmp / "w1",
            tmp / "config",
            base_env=env,
            SHARD_NAME="w1",
        )
    )
    shards = [{"id": "w1", "port": worker_port, "from": "A1", "to": "A50"}]
    programs.append(
        start_master(
            tmp / "master.log",
            master_port,
            tmp / "config",
            base_env=env,
            SHARDS_JSON=json.dumps(shards),
            **master_env,
        )
    )
    return worker_port, master_port
