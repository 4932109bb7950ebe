"""An account's own pace over the worker's API: set, read, kept across restarts, validated."""

from __future__ import annotations

import io
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from wasp_worker.app import build_app
from wasp_worker.events import EventLog

from tests.support.worker import CREDENTIAL
from tests.worker.test_worker_http import config


async def test_an_account_pace_is_set_read_kept_and_cleared(tmp_path: Path) -> None:
    settings = config(tmp_path, pacing_session_per_minute=30, pacing_jitter=0.25)
    async with TestClient(
        TestServer(build_app(settings, EventLog(stream=io.StringIO()))), headers=CREDENTIAL
    ) as worker:
        shard = await (await worker.get("/api/accounts/A1/pacing")).json()
        assert shard["pacing"] == {
            "session": {"perMinute": 30, "burst": 5},
            "recipient": {"perMinute": 6, "burst": 2},
            "jitter": 0.25,
        }
        assert shard["override"] is None
        own = {"session": {"perMinute": 4, "burst": 1}}
        answer = await worker.put("/api/accounts/A1/pacing", json=own)
        assert answer.status == 200
        assert (await answer.json())["pacing"]["session"] == {"perMinute": 4, "burst": 1}
        for bad in (
            {"session": {"perMinute": 0, "burst": 1}},
            {"session": {"perMinute": 4}},
            {"jitter": 3},
            {"recipient": {"perMinute": "6", "burst": 1}},
            {"speed": 1},
        ):
            refused = await worker.put("/api/accounts/A1/pacing", json=bad)
            assert refused.status == 400, bad
        assert (await worker.put("/api/accounts/A99/pacing", json=own)).status == 409
    async with TestClient(
        TestServer(build_app(settings, EventLog(stream=io.StringIO()))), headers=CREDENTIAL
    ) as worker:
        kept = await (await worker.get("/api/accounts/A1/pacing")).json()
        assert kept["override"] == own  # on the volume
        assert kept["pacing"]["recipient"] == {"perMinute": 6, "burst": 2}  # the shard's
        assert (await (await worker.get("/api/accounts/A2/pacing")).json())["override"] is None
        cleared = await worker.put("/api/accounts/A1/pacing", json={})
        assert (await cleared.json())["override"] is None
        assert (await cleared.json())["pacing"]["session"] == {"perMinute": 30, "burst": 5}
