"""A real Prometheus (Debian's) scraping a running `wasp dev` and the operator.

It waits for scrapes, then asks PromQL what operations teams ask: sessions per
shard, each shard's capacity ratio, routed requests by shard. The answers must
match what the processes themselves report. Metric names must follow
Prometheus' conventions (base units, `_total` counters).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.test_operator import Cluster
from tests.support.cluster import LocalCluster, free_port, http_ok
from tests.support.dev import DevRun, start_dev
from tests.support.operator import OperatorProcess

PROMETHEUS = shutil.which("prometheus")


def get_json(url: str, body: Any = None, method: str = "GET") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


class Prometheus:
    def __init__(self, tmp_path: Path, jobs: dict[str, list[tuple[str, dict[str, str]]]]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [target], "labels": labels} for target, labels in targets
                    ],
                }
                for job, targets in jobs.items()
            ],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log = tmp_path / "prometheus.log"
        assert PROMETHEUS is not None, "needs Debian's prometheus (.ci/run installs it)"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not http_ok(f"http://127.0.0.1:{self.port}/-/ready"):
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "prometheus not ready in 30 s"
            time.sleep(0.2)

    def query(self, promql: str) -> dict[str, float]:
        """An instant vector as {first label value (or ''): value}."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        answer = get_json(url)
        assert answer["status"] == "success", answer
        out = {}
        for item in answer["data"]["result"]:
            labels = item["metric"]
            key = labels.get("shard") or labels.get("job") or labels.get("phase") or ""
            out[key] = float(item["value"][1])
        return out

    def eventually(self, promql: str, expected: dict[str, float], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        got: dict[str, float] = {}
        while time.monotonic() < deadline:
            got = self.query(promql)
            if got == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"{promql}: {got} != {expected}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevRun]:
    run = start_dev(tmp_path)
    yield run
    run.process.stop()


def test_prometheus_scrapes_wasp_dev_and_the_operator(
    dev: DevRun,
    wasp_crds: LocalCluster,
    api_client: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    k = Cluster(wasp_crds, api_client, namespace)
    operator = OperatorProcess(k.kube, k.ns, tmp_path / "operator.log", "--standalone").start()
    k.apply("s1", {"slotFrom": "A1", "slotTo": "A50"})
    k.phase("s1", "Ready")
    w1, w2 = dev.worker_ports
    m1, m2 = dev.metrics_ports[1:]  # metrics have their own ports, not the API's
    for slot in ("A1", "A2"):
        get_json(f"{dev.url}/api/accounts/{slot}/connect", {}, "POST")
        get_json(f"{dev.url}/api/accounts/{slot}/scan", {}, "POST")
    get_json(f"{dev.url}/api/accounts/A60/connect", {}, "POST")
    for _ in range(5):
        get_json(f"{dev.url}/api/accounts/A60/status")

    prometheus = Prometheus(
        tmp_path,
        {
            "wasp-master": [(f"127.0.0.1:{dev.metrics_ports[0]}", {})],
            "wasp-worker": [
                (f"127.0.0.1:{m1}", {"shard": "w1"}),
                (f"127.0.0.1:{m2}", {"shard": "w2"}),
            ],
            "wasp-operator": [(f"127.0.0.1:{operator.metrics_port}", {})],
        },
    )
    try:
        prometheus.eventually(
            "sum by (job) (up)", {"wasp-master": 1, "wasp-worker": 2, "wasp-operator": 1}
        )
        # Sessions per shard, as each worker's /health says.
        health = {
            shard: get_json(f"http://127.0.0.1:{port}/health")["worker"]
            for shard, port in (("w1", w1), ("w2", w2))
        }
        # Ours, plus what warm-up started from the seeded roles.
        assert health["w1"]["active"] >= 2
        assert health["w2"]["active"] >= 1
        prometheus.eventually(
            "wasp_worker_sessions_active", {s: float(h["active"]) for s, h in health.items()}
        )
        prometheus.eventually(
            "wasp_worker_sessions_active / wasp_worker_sessions_max",
            {s: h["active"] / h["maxActive"] for s, h in health.items()},
        )
        connected = {
            shard: sum(
                sample.value
                for family in text_string_to_metric_families(
                    text(f"http://127.0.0.1:{port}/metrics")
                )
                for sample in family.samples
                if sample.name == "wasp_worker_sessions" and sample.labels["state"] == "CONNECTED"
            )
            for shard, port in (("w1", m1), ("w2", m2))
        }
        assert connected["w1"] >= 2
        prometheus.eventually('sum by (shard) (wasp_worker_sessions{state="CONNECTED"})', connected)
        # The master's own view of capacity agrees.
        prometheus.eventually(
            "wasp_master_shard_sessions_active", {s: float(h["active"]) for s, h in health.items()}
        )
        # Routed requests by shard: what the master's /metrics says, once scraped again.
        routed: dict[str, float] = {}
        for family in text_string_to_metric_families(text(dev.master_metrics)):
            for sample in family.samples:
                if sample.name == "wasp_master_requests_total":
                    shard = sample.labels["shard"]
                    routed[shard] = routed.get(shard, 0.0) + sample.value
        assert routed["w1"] >= 4.0
        assert routed["w2"] >= 6.0
        prometheus.eventually("sum by (shard) (wasp_master_requests_total)", routed)
        prometheus.eventually(
            'sum by (phase) (wasp_operator_shards{phase="Ready"})', {"Ready": 1.0}
        )
    finally:
        prometheus.stop()
        operator.stop()


def test_metric_names_follow_prometheus_conventions(dev: DevRun) -> None:
    get_json(f"{dev.url}/api/accounts/A1/connect", {}, "POST")
    pages = [dev.master_metrics, *dev.worker_metrics]
    seen = set()
    for page in pages:
        for family in text_string_to_metric_families(text(page)):
            if not family.name.startswith("wasp_"):
                continue
            seen.add(family.name)
            names = {sample.name for sample in family.samples}
            if family.type == "counter":
                assert all(n.endswith(("_total", "_created")) for n in names), family.name
            else:
                assert not family.name.endswith("_total"), family.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), f"{family.name}: base unit seconds"
            for unit in ("_ms", "_millis", "_msec", "_kb", "_mb"):
                assert unit not in family.name, f"{family.name}: use base units"
            assert family.documentation, f"{family.name} has no help text"
    assert {"wasp_master_requests", "wasp_worker_sessions_active"} <= seen
