"""`wasp master` as a real process for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from wasp_master.config import MasterConfig
from wasp_master.run import serving
from yarl import URL

from tests.support.processes import ProgramProcess, http_ok


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
        **env,
    }
    master = ProgramProcess(["master", *args], log, env=environment).start()
    master.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "master health")
    return master


class EdgeTestServer(TestServer):
    """The master as `wasp master` serves it, in-process: the edge on a free port in
    front, the aiohttp app behind it on its private socket. Drop-in for TestServer."""

    def __init__(self, app: web.Application, config: MasterConfig) -> None:
        super().__init__(app, host="127.0.0.1")
        self._config = config.model_copy(update={"host": "127.0.0.1", "port": 0})
        self._serving: contextlib.AbstractAsyncContextManager[int] | None = None

    async def start_server(
        self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        self._serving = serving(self._config, self.app)
        self.port = await self._serving.__aenter__()
        self._root = URL(f"http://127.0.0.1:{self.port}")

    async def close(self) -> None:
        if self._serving is not None:
            serving_, self._serving = self._serving, None
            await serving_.__aexit__(None, None, None)
        self._closed = True
