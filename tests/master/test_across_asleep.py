"""A read across shards never wakes a suspended shard and never asks one that is not
Ready: both are named in `missing`, and the shard that serves answers as usual.
In process: a real master app, a real worker app for A1..A10, and two shards as
Kubernetes would describe them (suspended; not Ready) at addresses nothing listens on."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import DirectoryStore
from wasp_master.state import MASTER
from wasp_worker.app import build_app as build_worker
from wasp_worker.events import EventLog

from tests.support.worker import WORKER_TOKEN
from tests.worker.test_worker_http import config as worker_config
from wasp.slots import SlotRange

NOWHERE = "http://127.0.0.1:9"  # discard: a call there would fail, not hang


async def test_suspended_and_unready_shards_are_missing_not_woken(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    worker = TestServer(
        build_worker(
            worker_config(tmp_path / "w1", slot_from="A1", slot_to="A10", config_dir=config_dir),
            EventLog(stream=io.StringIO()),
        )
    )
    await worker.start_server()
    woken: list[str] = []

    async def unsuspend(name: str) -> None:
        woken.append(name)

    directory = ShardDirectory()
    directory.put(
        ShardRoute("w1", str(worker.make_url("")).rstrip("/"), SlotRange.parse("A1", "A10"))
    )
    directory.put(ShardRoute("w2", NOWHERE, SlotRange.parse("A11", "A20"), suspended=True))
    directory.put(ShardRoute("w3", NOWHERE, SlotRange.parse("A21", "A30"), ready=False))
    config = MasterConfig(
        worker_tokens=(WORKER_TOKEN,), config_dir=config_dir, health_interval_s=60
    )
    app = build_app(config, directory, DirectoryStore(config_dir), unsuspend=unsuspend)
    try:
        async with TestClient(TestServer(app)) as client:
            for path in ("/api/conversations", "/api/search?q=hello", "/api/unread"):
                response = await client.get(path)
                answer: dict[str, Any] = await response.json()
                assert response.status == 200, answer
                assert answer["partial"] is True
                assert answer["missing"] == [
                    {
                        "shard": "w2",
                        "from": "A11",
                        "to": "A20",
                        "reason": "suspended: not woken for a read across shards",
                    },
                    {"shard": "w3", "from": "A21", "to": "A30", "reason": "not ready"},
                ], path
            only = await (await client.get("/api/conversations?slots=A1-A10")).json()
            assert only["partial"] is False
            assert only["missing"] == []
            status = await (await client.get("/api/status")).json()
            assert [s["reachable"] for s in status["shards"]] == [True, False, False]
            assert status["shards"][1]["reason"].startswith("suspended")
        assert woken == []
        metrics = app[MASTER].metrics.registry
        for shard, why in (("w2", "suspended"), ("w3", "not_ready")):
            labels = {"shard": shard, "why": why}
            assert metrics.get_sample_value("wasp_master_scatter_missing_total", labels) == 3
        assert (
            metrics.get_sample_value(
                "wasp_master_scatter_missing_total", {"shard": "w1", "why": "unreachable"}
            )
            is None
        )
    finally:
        await worker.close()
