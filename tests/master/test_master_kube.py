"""The master in Kubernetes mode, against the real control plane with the operator
running: the routing table follows WhatsAppShards, a request wakes a suspended shard,
PREWARM keeps shards awake, and the shared config lives in a ConfigMap."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.operator.test_operator import Cluster, eventually
from tests.support.cluster import LocalCluster, free_port
from tests.support.master import start_master
from tests.support.operator import OperatorProcess
from tests.support.processes import ProgramProcess
from tests.support.worker import start_worker


def call(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, method=method, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def listed(master_port: int) -> dict[str, dict[str, Any]]:
    _, _, health = call("GET", f"http://127.0.0.1:{master_port}/health")
    return {w["id"]: w for w in health["workers"]}


WATCH_BOUND_S = 30.0


def within(check: Callable[[], Any], what: str, seconds: float) -> float:
    """How long `check` took to hold; fails past `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {seconds} s")


@pytest.fixture
def k(wasp_crds: LocalCluster, api_client: client.ApiClient, namespace: str) -> Cluster:
    return Cluster(wasp_crds, api_client, namespace)


@pytest.fixture
def programs() -> Iterator[list[ProgramProcess]]:
    started: list[ProgramProcess] = []
    yield started
    for program in reversed(started):
        program.stop()


def test_master_follows_shards_wakes_them_and_keeps_prewarm_ones_awake(
    k: Cluster, tmp_path: Path, programs: list[ProgramProcess]
) -> None:
    env = {"PATH": os.environ["PATH"]}
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    worker_port = free_port()
    programs.append(
        start_worker(
            tmp_path / "worker.log", worker_port, tmp_path / "w1", config_dir, base_env=env
        )
    )
    worker_url = f"http://127.0.0.1:{worker_port}"
    # kwok runs no containers: the operator and the master reach the local worker instead.
    operator = OperatorProcess(
        k.kube, k.ns, tmp_path / "operator.log", "--standalone", health_url_template=worker_url
    ).start()
    programs.append(operator)
    k.core.create_namespaced_config_map(
        k.ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="wasp-config"),
            data={"accounts.json": "[]", "roles.json": "[]", "groups.json": "[]"},
        ),
    )
    kube_args = (
        "-n",
        k.ns,
        "--kubeconfig",
        str(k.kube.kubeconfig),
        "--endpoint-template",
        worker_url,
    )
    port, metrics = free_port(), free_port()
    master = start_master(
        tmp_path / "master.log",
        port,
        config_dir,
        *kube_args,
        "--config-map",
        "wasp-config",
        "--wake-timeout",
        "60",
        base_env={**env, **k.kube.env()},
        METRICS_PORT=str(metrics),
    )
    programs.append(master)
    base = f"http://127.0.0.1:{port}"

    # Creates, updates and deletes reach the routing table (a watch: milliseconds when the
    # machine is idle; the bound is for a loaded CI machine, not a latency target).
    k.apply("w1", {"slotFrom": "A1", "slotTo": "A50", "suspend": True})
    seen = within(lambda: "w1" in listed(port), "w1 routed", WATCH_BOUND_S)
    k.patch("w1", {"slotTo": "A40"})
    within(lambda: listed(port)["w1"]["to"] == "A40", "w1 narrowed", WATCH_BOUND_S)
    status, _, body = call("POST", f"{base}/api/accounts/A45/connect")
    assert (status, body["error"]) == (404, "no shard serves slot A45")
    k.apply("w9", {"slotFrom": "Z1", "slotTo": "Z9", "suspend": True})
    within(lambda: "w9" in listed(port), "w9 routed", WATCH_BOUND_S)
    k.kube.kubectl("delete", "wash", "w9", "-n", k.ns)
    within(lambda: "w9" not in listed(port), "w9 gone", WATCH_BOUND_S)

    # A request for the suspended shard wakes it, waits for it, then is answered.
    started = time.monotonic()
    status, _, body = call("POST", f"{base}/api/accounts/A3/connect")
    woke_in = time.monotonic() - started
    assert status == 200, body
    assert body["status"] == "CONNECTING"
    assert k.shard("w1")["spec"]["suspend"] is False
    assert k.status("w1")["phase"] == "Ready"
    assert 'wasp_master_wakeups_total{result="ok",shard="w1"} 1.0' in (
        urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
    )

    # A shard that cannot come up (its pod fits no node): 503 with Retry-After, no hang.
    k.apply(
        "w2",
        {"slotFrom": "B1", "slotTo": "B9", "suspend": True, "nodeSelector": {"none": "such"}},
    )
    quick = free_port()
    impatient = start_master(
        tmp_path / "impatient.log",
        quick,
        config_dir,
        *kube_args,
        "--config-map",
        "wasp-config",
        "--wake-timeout",
        "2",
        "--prewarm",
        "1",
        base_env={**env, **k.kube.env()},
    )
    programs.append(impatient)
    within(lambda: "w2" in listed(quick), "w2 routed", WATCH_BOUND_S)
    started = time.monotonic()
    status, headers, body = call("POST", f"http://127.0.0.1:{quick}/api/accounts/B1/connect")
    assert status == 503
    assert headers["Retry-After"]
    assert body["error"] == "shard w2 is unavailable: still waking up after 2 s"
    assert time.monotonic() - started < 20  # its 2 s wake timeout, not the default 60 s

    # PREWARM=1 keeps the first shard (w1, slot order) awake: suspending it does not last.
    k.patch("w1", {"suspend": True})
    eventually(lambda: k.shard("w1")["spec"]["suspend"] is False, "w1 woken by PREWARM", 20)
    assert k.shard("w2")["spec"]["suspend"] is False  # woken by the refused request above

    # The shared config is the ConfigMap; a write is validated, then visible to all masters.
    roles = [{"id": 1, "name": "Sales", "boundSlot": "A3"}]
    status, _, _ = call("PUT", f"{base}/api/roles", roles)
    assert status == 200
    stored = k.core.read_namespaced_config_map("wasp-config", k.ns).data
    assert json.loads(stored["roles.json"]) == roles
    assert call("GET", f"http://127.0.0.1:{quick}/api/roles")[2]["roles"] == roles
    status, _, body = call("PUT", f"{base}/api/roles", [{"boundSlot": "nope"}])
    assert status == 400
    assert (
        json.loads(k.core.read_namespaced_config_map("wasp-config", k.ns).data["roles.json"])
        == roles
    )
    print(f"routed {seen:.3f} s after create; woke in {woke_in:.1f} s")


def test_webhook_subscriptions_live_in_the_config_map_and_their_secrets_in_a_secret(
    k: Cluster, tmp_path: Path, programs: list[ProgramProcess]
) -> None:
    """In Kubernetes, `PUT /api/webhooks` writes the subscriptions into the shared
    ConfigMap and their signing secrets into a Secret, never the ConfigMap; a GET shows
    them masked, and a document sent back as read keeps the secret."""
    import base64

    config_dir = tmp_path / "config"
    config_dir.mkdir()
    k.core.create_namespaced_config_map(
        k.ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="wasp-config"),
            data={"accounts.json": "[]", "roles.json": "[]", "groups.json": "[]"},
        ),
    )
    k.core.create_namespaced_secret(
        k.ns, client.V1Secret(metadata=client.V1ObjectMeta(name="wasp-webhook-secrets"))
    )
    port = free_port()
    programs.append(
        start_master(
            tmp_path / "master.log",
            port,
            config_dir,
            "-n",
            k.ns,
            "--kubeconfig",
            str(k.kube.kubeconfig),
            "--config-map",
            "wasp-config",
            base_env={
                "PATH": os.environ["PATH"],
                **k.kube.env(),
                "WEBHOOK_SECRET": "wasp-webhook-secrets",
            },
        )
    )
    url = f"http://127.0.0.1:{port}/api/webhooks"
    document = {
        "subscriptions": [
            {"id": "crm", "url": "http://127.0.0.1:9/events", "events": ["message.received"]}
        ],
        "allow": ["127.0.0.0/8"],
    }
    status, _, answer = call("PUT", url, document)
    assert status == 200, answer
    secret = answer["secrets"]["crm"]
    assert secret.startswith("whsec_")

    stored = k.core.read_namespaced_config_map("wasp-config", k.ns).data
    assert secret not in json.dumps(stored)
    assert json.loads(stored["webhooks.json"])["subscriptions"][0]["url"] == (
        "http://127.0.0.1:9/events"
    )
    kept = k.core.read_namespaced_secret("wasp-webhook-secrets", k.ns).data
    assert json.loads(base64.b64decode(kept["webhook-secrets.json"])) == {"crm": secret}

    status, _, answer = call("GET", url)
    assert status == 200
    read = answer["webhooks"]
    shown = read["subscriptions"][0]["secret"]
    assert shown != secret
    assert shown.endswith(secret[-4:])
    assert secret not in json.dumps(answer)
    # Sent back as read (masked secret): the secret stays; nothing new is generated.
    status, _, again = call("PUT", url, read)
    assert status == 200, again
    assert not again.get("secrets")
    kept = k.core.read_namespaced_secret("wasp-webhook-secrets", k.ns).data
    assert json.loads(base64.b64decode(kept["webhook-secrets.json"])) == {"crm": secret}
    assert secret not in (tmp_path / "master.log").read_text()
