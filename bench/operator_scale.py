"""1,000 WhatsAppShards (50,000 slots) against a private loopback cluster.

Measures how long until every shard has its StatefulSet and a status, and the
operator's peak resident memory. The floor next to it: how long the apiserver
alone takes to store the same 1,000 objects (kubectl create, no operator).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from tests.support.cluster import ROOT, LocalCluster
from tests.support.operator import OperatorProcess
from wasp.contract import CRD

SHARDS = 1000
SLOTS_PER_SHARD = 50


def shard_list(namespace: str, prefix: str) -> str:
    items = [
        {
            "apiVersion": CRD.api_version,
            "kind": CRD.kind,
            "metadata": {"name": f"w{i}", "namespace": namespace},
            "spec": {
                "slotFrom": f"{prefix}{i * SLOTS_PER_SHARD + 1}",
                "slotTo": f"{prefix}{(i + 1) * SLOTS_PER_SHARD}",
                "backend": "simulator",
            },
        }
        for i in range(SHARDS)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wasp-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        start_s = cluster.up()
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD.crd_name}")
            cluster.kubectl("create", "namespace", "floor")
            cluster.kubectl("create", "namespace", "scale")

            started = time.monotonic()
            cluster.kubectl("create", "-f", "-", input=shard_list("floor", "A"))
            floor_s = time.monotonic() - started

            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)
            operator = OperatorProcess(
                cluster,
                "scale",
                Path(tmp) / "operator.log",
                "--standalone",
                "--status-interval",
                "10",
            )
            operator.start()
            try:
                started = time.monotonic()
                cluster.kubectl("create", "-f", "-", input=shard_list("scale", "A"))
                created_s = time.monotonic() - started
                while True:
                    sets = len(apps.list_namespaced_stateful_set("scale").items)
                    shards = custom.list_namespaced_custom_object(
                        CRD.group, CRD.version, "scale", CRD.plural
                    )["items"]
                    with_status = sum(1 for s in shards if (s.get("status") or {}).get("phase"))
                    if sets == SHARDS and with_status == SHARDS:
                        break
                    if time.monotonic() - started > 900:
                        raise TimeoutError(f"{sets} StatefulSets, {with_status} statuses")
                    time.sleep(1)
                converged_s = time.monotonic() - started
                rss = peak_rss_mb(operator.pid)
            finally:
                operator.stop()
        finally:
            cluster.down()
    return {
        "cluster_start_s": round(start_s, 1),
        "shards": SHARDS,
        "slots": SHARDS * SLOTS_PER_SHARD,
        "store_only_s": round(floor_s, 1),
        "kubectl_create_s": round(created_s, 1),
        "all_reconciled_s": round(converged_s, 1),
        "ratio_to_store_only": round(converged_s / floor_s, 2),
        "operator_peak_rss_mb": round(rss, 1),
    }
