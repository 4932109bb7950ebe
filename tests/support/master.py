"""`wasp master` as a real process for tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient, TestServer
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.keys import hash_key
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore

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


def key_header(name: str) -> dict[str, str]:
    """The header of the test key named `name` (see `keyed_master`)."""
    return {"x-api-key": f"key-{name}-0123456789"}


@asynccontextmanager
async def keyed_master(
    tmp_path: Path, keys: dict[str, list[str]]
) -> AsyncIterator[TestClient[Any, Any]]:
    """A master app in-process (no shards) whose config is `tmp_path/config`, with one
    hashed key per name of `keys` (its operations), sent as `key_header(name)`."""
    keys_file = tmp_path / "keys.yaml"
    records = [
        {"id": name, "hash": hash_key(key_header(name)["x-api-key"]), "operations": operations}
        for name, operations in keys.items()
    ]
    keys_file.write_text(yaml.safe_dump({"keys": records}))
    config = MasterConfig(port=0, config_dir=tmp_path / "config", api_keys_file=keys_file)
    app = build_app(config, ShardDirectory(), DirectoryStore(config.config_dir))
    async with TestClient(TestServer(app)) as client:
        yield client
