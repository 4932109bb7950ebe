"""The chart in the real loopback control plane: install, operate, upgrade, uninstall.

kwok runs no containers: the operator and master pods report Running but do
nothing. So the operator is run here as a local process with the flags the
installed Deployment carries (read back from the release, so a wrong flag
fails this test) and the token of the chart's operator ServiceAccount (so its
RBAC is proven sufficient); the other accounts are probed with
`kubectl auth can-i`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.chart.helm import CHART, Helm, container, documents, find, flags
from tests.support.cluster import LocalCluster
from tests.support.operator import CLOSED_PORT
from tests.support.processes import ProgramProcess, free_port, http_ok
from tests.support.waiting import eventually
from wasp.contract import (
    CRD,
    MASTER_METRICS_PORT,
    WORKER_METRICS_PORT,
    WORKER_PORT,
    parse_tokens,
)

pytestmark = pytest.mark.cluster

RELEASE = "wasp"
SHARD = (
    f"apiVersion: {CRD.api_version}\nkind: {CRD.kind}\n"
    + """metadata: {{name: {name}, namespace: {namespace}}}
spec:
  slotFrom: {slot_from}
  slotTo: {slot_to}
  capacity: {{maxActive: 10}}
  storage: {{size: 1Gi}}
  backend: simulator
"""
)
# Flags of the chart's operator that only make sense inside the cluster; the
# local operator gets loopback equivalents for each (and the chart must set them).
IN_CLUSTER_FLAGS = {
    "--metrics-port",
    "--liveness",
    "--webhook-port",
    "--webhook-host",
    "--webhook-cert",
    "--webhook-key",
    "--webhook-ca",
}


class Release:
    """One installed release of charts/wasp and the calls the test makes on it."""

    def __init__(self, cluster: LocalCluster, api: client.ApiClient, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.helm = Helm(cluster.bin_dir, cluster.env())
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    def install(self, command: str, *values: str) -> None:
        self.helm.run(
            command,
            RELEASE,
            str(CHART),
            "--namespace",
            self.namespace,
            "--wait",
            "--timeout",
            "60s",
            *values,
        )

    def manifest(self) -> list[dict[str, Any]]:
        return documents(self.helm.run("get", "manifest", RELEASE, "-n", self.namespace).stdout)

    def secret(self, name: str) -> dict[str, str]:
        data: dict[str, str] = self.core.read_namespaced_secret(name, self.namespace).data
        return data

    def running_pods(self, component: str) -> list[str]:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/component={component}"
        ).items
        return [p.metadata.name for p in pods if p.status.phase == "Running"]

    def can(self, account: str, verb: str, resource: str, cluster_scoped: bool = False) -> bool:
        where = [] if cluster_scoped else ["-n", self.namespace]
        subject = f"system:serviceaccount:{self.namespace}:{account}"
        result = self.cluster.run_kubectl("auth", "can-i", verb, resource, "--as", subject, *where)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"

    def token_kubeconfig(self, account: str, path: Path) -> Path:
        """A kubeconfig that acts as `account` (TokenRequest API), nothing more."""
        token = self.cluster.kubectl(
            "create", "token", account, "-n", self.namespace, "--duration", "1h"
        ).strip()
        admin = json.loads(self.cluster.kubeconfig.read_text())
        admin["users"] = [{"name": account, "user": {"token": token}}]
        admin["contexts"][0]["context"]["user"] = account
        path.write_text(json.dumps(admin))
        return path

    def apply_shard(self, name: str, slot_from: str, slot_to: str) -> None:
        shard = SHARD.format(
            name=name, namespace=self.namespace, slot_from=slot_from, slot_to=slot_to
        )
        self.cluster.kubectl("apply", "-f", "-", input=shard)

    def statefulset(self, name: str) -> Any | None:
        found = self.apps.list_namespaced_stateful_set(
            self.namespace, field_selector=f"metadata.name={name}"
        ).items
        return found[0] if found else None

    def claim_bound(self, name: str) -> bool:
        claims = self.core.list_namespaced_persistent_volume_claim(
            self.namespace, field_selector=f"metadata.name=data-{name}-0"
        ).items
        return bool(claims) and claims[0].status.phase == "Bound"

    def webhooks(self, configuration: str) -> list[str]:
        found = self.admission.list_validating_webhook_configuration(
            field_selector=f"metadata.name={configuration}"
        ).items
        return [hook.name for hook in found[0].webhooks or []] if found else []


def local_operator(
    release: Release, deployment: dict[str, Any], workdir: Path
) -> tuple[ProgramProcess, int]:
    """`wasp operator` with the Deployment's flags, as the chart's operator ServiceAccount."""
    spec = deployment["spec"]["template"]["spec"]
    args = container(deployment)["args"]
    assert args[0] == "operator"
    chart_flags = flags(args[1:])
    missing = IN_CLUSTER_FLAGS - chart_flags.keys()
    assert not missing, f"the chart's operator lacks {missing}"
    kept = [
        f"{name}={value}" for name, value in chart_flags.items() if name not in IN_CLUSTER_FLAGS
    ]
    # The webhook on loopback, with a certificate the apiserver trusts for 127.0.0.1.
    certs = release.cluster.issue_certificate(workdir / "certs", "webhook")
    liveness = free_port()
    local = [
        "--metrics-listen=127.0.0.1",
        f"--metrics-port={free_port()}",
        f"--liveness=http://127.0.0.1:{liveness}/healthz",
        "--webhook-listen=127.0.0.1",
        f"--webhook-port={free_port()}",
        "--webhook-host=127.0.0.1",
        f"--webhook-cert={certs / 'webhook.crt'}",
        f"--webhook-key={certs / 'webhook.key'}",
        f"--webhook-ca={release.cluster.pki / 'ca.crt'}",
        f"--health-url-template={CLOSED_PORT}",
    ]
    kubeconfig = release.token_kubeconfig(
        spec["serviceAccountName"], workdir / "operator.kubeconfig"
    )
    env = {**release.cluster.env(), "KUBECONFIG": str(kubeconfig)}
    process = ProgramProcess(["operator", *kept, *local], workdir / "operator.log", env=env)
    return process, liveness


@pytest.fixture
def release(
    wasp_crds: LocalCluster, api_client: client.ApiClient, namespace: str
) -> Iterator[Release]:
    installed = Release(wasp_crds, api_client, namespace)
    yield installed
    installed.helm.run("uninstall", RELEASE, "-n", namespace, check=False)


def test_install_operate_upgrade_uninstall(release: Release, tmp_path: Path) -> None:
    release.install("install")
    docs = release.manifest()
    credentials = find(docs, "Secret", "-credentials")["metadata"]["name"]
    webhook_secret = find(docs, "Secret", "-webhook")["metadata"]["name"]
    configuration = find(docs, "ValidatingWebhookConfiguration")["metadata"]["name"]
    accounts = {
        role: find(docs, "ServiceAccount", f"-{role}")["metadata"]["name"]
        for role in ("operator", "master", "worker")
    }

    # Operator (two replicas) and master pods run (kwok stands in for kubelets).
    assert len(release.running_pods("operator")) == 2
    assert len(release.running_pods("master")) == 1
    generated = release.secret(credentials)
    assert len(base64.b64decode(generated["master-token"])) >= 32
    assert base64.b64decode(generated["api-keys"])
    (worker_token,) = parse_tokens(base64.b64decode(generated["worker-tokens"]).decode())
    assert len(worker_token) >= 48

    # The master reads the worker token from the Secret and serves metrics on their port.
    master_name = find(docs, "Deployment", "-master")["metadata"]["name"]
    installed = release.apps.read_namespaced_deployment(master_name, release.namespace)
    master_container = installed.spec.template.spec.containers[0]
    master_env = {e.name: e for e in master_container.env}
    ref = master_env["WORKER_TOKENS"].value_from.secret_key_ref
    assert (ref.name, ref.key) == (credentials, "worker-tokens")
    assert master_env["METRICS_PORT"].value == str(MASTER_METRICS_PORT)
    assert {p.name: p.container_port for p in master_container.ports}["metrics"] == (
        MASTER_METRICS_PORT
    )

    # The policies as the apiserver stored them: workers' API port from the master and
    # the operator, their metrics port and the master's from Prometheus only.
    policies = {
        p.metadata.name: p.spec
        for p in release.networking.list_namespaced_network_policy(release.namespace).items
    }
    workers_policy = policies[find(docs, "NetworkPolicy", "-workers")["metadata"]["name"]]
    api_rule, metrics_rule = workers_policy.ingress
    assert [p.port for p in api_rule.ports] == [WORKER_PORT]
    assert {
        peer.pod_selector.match_labels["app.kubernetes.io/component"] for peer in api_rule._from
    } == {"master", "operator"}
    assert [p.port for p in metrics_rule.ports] == [WORKER_METRICS_PORT]
    (scraper,) = metrics_rule._from
    assert scraper.pod_selector.match_labels == {"app.kubernetes.io/name": "prometheus"}
    master_policy = policies[find(docs, "NetworkPolicy", "-master")["metadata"]["name"]]
    assert [p.port for p in master_policy.ingress[1].ports] == [MASTER_METRICS_PORT]
    assert master_policy.ingress[1]._from[0].pod_selector.match_labels == (
        scraper.pod_selector.match_labels
    )
    cert = release.secret(webhook_secret)
    assert {"ca.crt", "tls.crt", "tls.key"} <= cert.keys()

    # Each account can do what its program needs, and not more.
    master, worker, operator = accounts["master"], accounts["worker"], accounts["operator"]
    config_map = find(docs, "ConfigMap", "-config")["metadata"]["name"]
    assert release.can(master, "patch", CRD.crd_name)
    assert release.can(master, "watch", CRD.crd_name)
    assert release.can(master, "update", f"configmaps/{config_map}")
    assert not release.can(master, "update", "configmaps/something-else")
    assert not release.can(master, "get", "secrets")
    signing_secrets = find(docs, "Secret", "-webhook-secrets")["metadata"]["name"]
    assert release.can(master, "update", f"secrets/{signing_secrets}")
    assert not release.can(master, "get", "secrets/something-else")
    assert not release.can(master, "create", "events")
    assert not release.can(master, "delete", CRD.crd_name)
    assert release.can(worker, "update", "leases.coordination.k8s.io")
    assert release.can(worker, "create", "leases.coordination.k8s.io")
    assert not release.can(worker, "list", "pods")
    assert not release.can(worker, "get", "secrets")
    assert not release.can(worker, "get", CRD.crd_name)
    assert not release.can(operator, "get", "secrets")
    assert not release.can(operator, "list", "pods")
    assert not release.can(operator, "delete", CRD.crd_name)
    assert not release.can(
        operator, "patch", "validatingwebhookconfigurations/another", cluster_scoped=True
    )

    # The real operator, as the chart's operator account with the chart's flags,
    # turns a shard applied with kubectl into its StatefulSet and claim.
    deployment = find(docs, "Deployment", "-operator")
    process, liveness = local_operator(release, deployment, tmp_path)
    process.start()
    try:
        process.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{liveness}/healthz"), "operator liveness"
        )
        release.apply_shard("w1", "A1", "A50")
        sts = eventually(lambda: release.statefulset("w1"), "StatefulSet w1")
        pod = sts.spec.template.spec
        assert pod.service_account_name == worker
        assert {v.config_map.name for v in pod.volumes if v.config_map} == {config_map}
        env = {e.name: e for e in pod.containers[0].env}
        assert env["MASTER_TOKEN"].value_from.secret_key_ref.name == credentials
        # The worker tokens by reference, required, and nowhere in the StatefulSet itself.
        tokens_ref = env["WORKER_TOKENS"].value_from.secret_key_ref
        assert (tokens_ref.name, tokens_ref.key) == (credentials, "worker-tokens")
        assert not tokens_ref.optional
        assert env["WORKER_INSECURE"].value == "false"
        assert env["METRICS_PORT"].value == str(WORKER_METRICS_PORT)
        assert worker_token not in json.dumps(
            release.apps.api_client.sanitize_for_serialization(sts)
        )
        ports = {p.name: p.container_port for p in pod.containers[0].ports}
        assert ports == {"http": WORKER_PORT, "metrics": WORKER_METRICS_PORT}
        master_svc = find(docs, "Service", "-master")["metadata"]["name"]
        assert env["MASTER_INTERNAL_URL"].value == (
            f"http://{master_svc}.{release.namespace}.svc:8080"
        )
        assert pod.containers[0].image == container(deployment)["image"]
        eventually(lambda: release.claim_bound("w1"), "claim of w1 bound")
        # kopf filled the chart's webhook configuration: its RBAC suffices.
        eventually(lambda: release.webhooks(configuration), "webhooks registered")

        # Upgrade: a changed value and a shard from values. Generated secrets
        # and the certificate stay; the master is not restarted; the webhooks
        # the operator wrote survive.
        master_generation = release.apps.read_namespaced_deployment(
            find(docs, "Deployment", "-master")["metadata"]["name"], release.namespace
        ).metadata.generation
        release.install(
            "upgrade",
            "--set",
            "operator.statusInterval=5",
            "--set",
            "shards[0].name=w2,shards[0].slotFrom=A51,shards[0].slotTo=A100",
        )
        assert release.secret(credentials) == generated
        assert release.secret(webhook_secret) == cert
        after = release.apps.read_namespaced_deployment(
            find(docs, "Deployment", "-master")["metadata"]["name"], release.namespace
        )
        assert after.metadata.generation == master_generation
        assert release.webhooks(configuration)
        eventually(lambda: release.statefulset("w2"), "StatefulSet w2 from values")
        eventually(lambda: release.claim_bound("w2"), "claim of w2 bound")

        # Rotation, first step: the new token joins the old one; the master (restarted
        # by the credentials checksum) still sends the old one, which every worker takes.
        new = "rotated-token-5b0e8c2d7a41f936"
        release.install(
            "upgrade",
            "--reuse-values",
            "--set",
            f"credentials.workerTokens={{{worker_token},{new}}}",
        )
        rotated = release.secret(credentials)
        assert base64.b64decode(rotated["worker-tokens"]).decode() == f"{worker_token},{new}"
        assert rotated["master-token"] == generated["master-token"]
        restarted = release.apps.read_namespaced_deployment(master_name, release.namespace)
        assert restarted.metadata.generation > master_generation
    finally:
        process.stop()

    # Uninstall removes what the release made (shard w2 with its StatefulSet,
    # the webhook configurations) and keeps every shard's volume.
    release.helm.run("uninstall", RELEASE, "-n", release.namespace, "--wait")
    eventually(lambda: release.statefulset("w2") is None, "StatefulSet w2 collected", 60)
    assert release.claim_bound("w2")
    assert release.claim_bound("w1")
    assert not release.admission.list_validating_webhook_configuration(
        field_selector=f"metadata.name={configuration}"
    ).items
