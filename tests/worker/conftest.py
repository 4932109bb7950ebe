"""The in-process worker most worker tests talk to: simulator backend, A1..A50, capacity 3,
called with the master's credential."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.events import EventLog

from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(
        TestServer(build_app(config(tmp_path), EventLog(stream=io.StringIO()))),
        headers=CREDENTIAL,
    ) as client:
        yield client
