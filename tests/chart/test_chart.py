"""charts/wasp, rendered and checked by real tools: helm lint, kubeconform against
the real apiserver's schemas, kube-score; and the properties the chart promises."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from wasp_master.config import MasterConfig
from wasp_operator import children
from wasp_operator.config import OperatorConfig

from tests.chart.helm import CHART, EXAMPLES, Helm, container, documents, find, flags
from tests.chart.schemas import LOCATION, write_schemas
from tests.support.cluster import ROOT, LocalCluster, tools_bin_dir
from wasp.contract import (
    CRD,
    IMAGE_REPOSITORY,
    MASTER_METRICS_PORT,
    VERSION,
    WORKER_METRICS_PORT,
    WORKER_PORT,
    check_shard_name,
    default_image,
    parse_tokens,
)
from wasp.shard import WhatsAppShardSpec

# No schema for prometheus-operator's kinds exists offline (its CRDs are not
# installed in the test cluster); their metric names are checked below instead.
NO_SCHEMA = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

# kube-score checks we do not follow, and why.
KUBE_SCORE_SKIPPED = {
    # IfNotPresent with a versioned tag (or a digest) is the usual choice for a
    # release image; Always would make every pod start depend on the registry.
    "container-image-pull-policy": "tags are versions; pulling on every start adds a dependency",
    # The workers' NetworkPolicy selects pods the operator creates at run time
    # (labels from operator/wasp_operator/children.py): kube-score cannot see them.
    "networkpolicy-targets-pod": "worker pods are made by the operator, not the chart",
    # The check wants an egress policy too. Operator and master must reach the
    # apiserver, whose address no NetworkPolicy selector can name portably;
    # an allow-all egress rule would only silence the check. Ingress is
    # restricted and checked by test_network_policy_* below.
    "pod-networkpolicy": "egress must reach the apiserver, which selectors cannot name",
    # One master on purpose: workers push live events to one master Service
    # address, and each Socket.IO client must be on the master that got them.
    "deployment-replicas": "the master runs one replica by design",
}


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm(tools_bin_dir())


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, str]:
    return {"default": helm.template(), "examples": helm.template("-f", str(EXAMPLES))}


def test_chart_crds_are_the_generated_ones() -> None:
    source = sorted(p.name for p in (ROOT / "crds").iterdir())
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == source
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes()


@pytest.mark.parametrize("values", [[], ["-f", str(EXAMPLES)]], ids=["default", "examples"])
def test_helm_lint_strict(helm: Helm, values: list[str]) -> None:
    result = helm.run("lint", "--strict", str(CHART), *values, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_refuses_unknown_and_wrong_values(helm: Helm) -> None:
    for bad in ("operator.replica=2", "image.pullPolicy=Sometimes", "master.port=0"):
        result = helm.run("template", "rel", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, bad
        assert "schema" in result.stderr, bad


@pytest.mark.cluster
def test_kubeconform_strict_against_the_apiservers_schemas(
    wasp_crds: LocalCluster, rendered: dict[str, str], tmp_path: Path
) -> None:
    openapi = json.loads(wasp_crds.kubectl("get", "--raw", "/openapi/v2"))
    docs = [doc for text in rendered.values() for doc in documents(text)]
    kinds = {
        (*d["apiVersion"].rpartition("/")[::2], d["kind"])
        for d in docs
        if d["kind"] not in NO_SCHEMA
    }
    wanted = {(group, version, kind) for group, version, kind in kinds}
    written = write_schemas(openapi, wanted, tmp_path)
    assert len(written) == len(wanted), f"no schema for {wanted} in {written}"
    for name, text in rendered.items():
        result = subprocess.run(
            [
                str(wasp_crds.bin_dir / "kubeconform"),
                "-strict",
                "-summary",
                "-schema-location",
                f"{tmp_path}/{LOCATION}",
                "-skip",
                ",".join(sorted(NO_SCHEMA)),
            ],
            input=text,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "Invalid: 0, Errors: 0" in result.stdout, result.stdout


@pytest.mark.parametrize("values", ["default", "examples"])
def test_kube_score_is_clean(rendered: dict[str, str], values: str) -> None:
    ignored = [arg for test in KUBE_SCORE_SKIPPED for arg in ("--ignore-test", test)]
    result = subprocess.run(
        [str(tools_bin_dir() / "kube-score"), "score", "--output-format", "ci", *ignored, "-"],
        input=rendered[values],
        capture_output=True,
        text=True,
    )
    problems = [
        line for line in result.stdout.splitlines() if line.startswith(("[WARNING]", "[CRITICAL]"))
    ]
    assert result.returncode == 0, result.stderr
    assert not problems, "\n".join(problems)


def test_every_pod_is_restricted(rendered: dict[str, str]) -> None:
    for doc in documents(rendered["examples"]):
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert {"requests", "limits"} <= set(c["resources"])
            assert "livenessProbe" in c
            assert "readinessProbe" in c
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def test_operator_and_master_are_wired_together(rendered: dict[str, str]) -> None:
    docs = documents(rendered["default"])
    operator = container(find(docs, "Deployment", "-operator"))
    args = flags(operator["args"][1:])
    configmap = find(docs, "ConfigMap", "-config")["metadata"]["name"]
    secret = find(docs, "Secret", "-credentials")["metadata"]["name"]
    master_svc = find(docs, "Service", "-master")["metadata"]["name"]
    worker_sa = find(docs, "ServiceAccount", "-worker")["metadata"]["name"]
    webhook_svc = find(docs, "Service", "-webhook")["metadata"]["name"]
    assert operator["args"][0] == "operator"
    assert args["--namespace"] == "wasp"
    assert args["--peering"] == "wasp-operator"
    assert args["--worker-image"] == operator["image"]
    assert args["--worker-service-account"] == worker_sa
    assert args["--config-map"] == configmap
    assert args["--master-internal-url"] == f"http://{master_svc}.wasp.svc:8080"
    assert args["--master-token-secret"] == secret
    assert args["--worker-tokens-secret"] == secret
    assert args["--metrics-port"] == "9090"
    assert args["--liveness"] == "http://0.0.0.0:8081/healthz"
    assert args["--webhook-port"] == "9443"
    assert args["--webhook-host"] == f"{webhook_svc}.wasp.svc"
    master = container(find(docs, "Deployment", "-master"))
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in master["env"]}
    assert master["args"] == ["master"]
    assert env["PORT"] == "8080"
    assert env["CONFIGDIR"] == "/config"
    assert env["CONFIG_MAP"] == configmap
    assert env["WATCH_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["MASTER_TOKEN"] == {"secretKeyRef": {"name": secret, "key": "master-token"}}
    assert env["API_KEYS"] == {"secretKeyRef": {"name": secret, "key": "api-keys"}}
    # What the master sends workers: from the Secret the operator points workers at.
    assert env["WORKER_TOKENS"] == {"secretKeyRef": {"name": secret, "key": "worker-tokens"}}
    assert env["METRICS_PORT"] == str(MASTER_METRICS_PORT)
    ports = {p["name"]: p["containerPort"] for p in master["ports"]}
    assert ports == {"http": 8080, "metrics": MASTER_METRICS_PORT}
    assert env["PREWARM"] == "0"
    assert env["WAKE_TIMEOUT"] == "60"
    assert env["SCATTER_TIMEOUT"] == "3"
    data = find(docs, "ConfigMap", "-config")["data"]
    assert data == {"accounts.json": "[]", "roles.json": "[]", "groups.json": "[]"}


def test_example_shards_render_as_whatsappshards(rendered: dict[str, str]) -> None:
    shards = [d for d in documents(rendered["examples"]) if d["kind"] == "WhatsAppShard"]
    assert [s["metadata"]["name"] for s in shards] == ["w1", "w2"]
    assert shards[1]["spec"]["suspend"] is True
    assert "name" not in shards[1]["spec"]
    assert not [d for d in documents(rendered["default"]) if d["kind"] == "WhatsAppShard"]


def test_network_policy_selects_the_operators_worker_pods(rendered: dict[str, str]) -> None:
    from wasp_operator.children import labels

    docs = documents(rendered["default"])
    policy = find(docs, "NetworkPolicy", "-workers")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels("w1").items()
    api, metrics = policy["spec"]["ingress"]
    # The API port from the master (and the operator, for /health); metrics from Prometheus.
    assert api["ports"] == [{"port": WORKER_PORT, "protocol": "TCP"}]
    components = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in api["from"]
    }
    assert components == {"master", "operator"}
    assert all(set(peer) == {"podSelector"} for peer in api["from"])  # this namespace only
    assert metrics["ports"] == [{"port": WORKER_METRICS_PORT, "protocol": "TCP"}]
    (prometheus,) = metrics["from"]
    assert prometheus["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    # The master's API port is open to all, its metrics port to Prometheus only.
    master = find(docs, "NetworkPolicy", "-master")["spec"]["ingress"]
    assert master[0] == {"ports": [{"port": 8080, "protocol": "TCP"}]}
    assert master[1]["ports"] == [{"port": MASTER_METRICS_PORT, "protocol": "TCP"}]
    assert master[1]["from"] == metrics["from"]


def test_metrics_are_scraped_on_their_own_ports_only(rendered: dict[str, str]) -> None:
    docs = documents(rendered["examples"])
    public = find(docs, "Service", "-master")
    assert [p["name"] for p in public["spec"]["ports"]] == ["http"]
    assert "wasp.dev/metrics" not in public["metadata"]["labels"]
    scraped = [
        d for d in docs if d["kind"] == "Service" and "wasp.dev/metrics" in d["metadata"]["labels"]
    ]
    assert {d["metadata"]["name"] for d in scraped} == {
        "rel-wasp-master-metrics",
        "rel-wasp-operator-metrics",
    }
    for service in scraped:
        assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    monitor = find(docs, "ServiceMonitor")["spec"]
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    pods = find(docs, "PodMonitor")["spec"]
    assert [e["port"] for e in pods["podMetricsEndpoints"]] == ["metrics"]


def test_worker_tokens_are_generated_kept_or_given(helm: Helm) -> None:
    def tokens(*args: str) -> str:
        secret = find(documents(helm.template(*args)), "Secret", "-credentials")
        return base64.b64decode(secret["data"]["worker-tokens"]).decode()

    generated = tokens()
    assert parse_tokens(generated) == (generated,)
    assert tokens() != generated  # fresh per install (kept on upgrade: test_install)
    given = ("new-token-0123456789", "old-token-0123456789")
    args = [f"--set=credentials.workerTokens[{i}]={t}" for i, t in enumerate(given)]
    assert tokens(*args) == ",".join(given)
    # What the master sends is the first, and workers accept both.
    assert MasterConfig(worker_tokens=parse_tokens(tokens(*args))).worker_token == given[0]


@pytest.mark.parametrize(
    "values",
    [
        ["credentials.workerTokens[0]=short"],
        ["credentials.workerTokens[0]=has\\,a-comma-0123456789"],
        [f"credentials.workerTokens[{i}]=token-number-{i}-0123456789" for i in range(3)],
    ],
)
def test_worker_tokens_the_workers_would_refuse_are_refused_by_the_schema(
    helm: Helm, values: list[str]
) -> None:
    args = [f"--set={v}" for v in values]
    result = helm.run("template", "rel", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert "workerTokens" in result.stderr


def _metric_names_in_code() -> set[str]:
    sources = [
        *(ROOT / "worker" / "wasp_worker").rglob("*.py"),
        *(ROOT / "master" / "wasp_master").glob("*.py"),
        *(ROOT / "operator").rglob("*.py"),
    ]
    names = set()
    for path in sources:
        names |= set(re.findall(r"\"(wasp_[a-z_]+)\"", path.read_text()))
    return {name.removesuffix("_total") for name in names}


def _base(metric: str) -> str:
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        metric = metric.removesuffix(suffix)
    return metric


def test_alerts_and_dashboard_use_metrics_the_code_exports(rendered: dict[str, str]) -> None:
    known = _metric_names_in_code()
    rule = find(documents(rendered["examples"]), "PrometheusRule")
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    dashboard = json.loads(
        find(documents(rendered["examples"]), "ConfigMap", "-dashboard")["data"]["wasp.json"]
    )
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {_base(m) for expr in exprs for m in re.findall(r"\bwasp_[a-z_]+", expr)}
    assert used
    assert used <= known, f"not exported by the code: {used - known}"
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"WaspShardNearCapacity", "WaspShardNotReady", "WaspBadMacBreakerTripping"} <= alerts
    assert "WaspOutboundQueueBacklog" in alerts
    assert {"WaspWebhookBacklog", "WaspWebhookDeadLetters", "WaspWebhookDisabled"} <= alerts


@pytest.mark.parametrize("count", [0, 1, 3])
def test_prewarm_is_a_count_the_master_reads_as_one(helm: Helm, count: int) -> None:
    docs = documents(helm.template("--set", f"master.prewarm={count}"))
    env = {e["name"]: e.get("value") for e in container(find(docs, "Deployment", "-master"))["env"]}
    # The master's own settings parse it: the first `count` shards are kept awake.
    assert MasterConfig.model_validate({"prewarm": env["PREWARM"]}).prewarm == count


@pytest.mark.parametrize("value", ["true", "false", "-1", "1.5"])
def test_prewarm_that_is_not_a_count_is_refused_by_the_schema(helm: Helm, value: str) -> None:
    # `true` once meant "start every shard" here while the master read it as 1 shard.
    result = helm.run(
        "template", "rel", str(CHART), "--set", f"master.prewarm={value}", check=False
    )
    assert result.returncode != 0
    assert "prewarm" in result.stderr


@pytest.mark.parametrize(
    ("value", "accepted"), [("0.5", True), ("60", True), ("0", False), ("61", False)]
)
def test_scatter_timeout_reaches_the_master_within_what_it_accepts(
    helm: Helm, value: str, accepted: bool
) -> None:
    """The chart's bounds are the master's: a value the schema lets through, the master
    parses to the same number; one it would refuse at start, the schema refuses first."""
    result = helm.run(
        "template", "rel", str(CHART), "--set-json", f"master.scatterTimeout={value}", check=False
    )
    assert (result.returncode == 0) == accepted, result.stderr
    if not accepted:
        assert "scatterTimeout" in result.stderr
        with pytest.raises(ValidationError, match="scatter_timeout_s"):
            MasterConfig.model_validate({"scatter_timeout_s": value})
        return
    docs = documents(result.stdout)
    env = {e["name"]: e.get("value") for e in container(find(docs, "Deployment", "-master"))["env"]}
    assert MasterConfig.model_validate(
        {"scatter_timeout_s": env["SCATTER_TIMEOUT"]}
    ).scatter_timeout_s == float(value)


def test_chart_agrees_with_the_contract_and_the_operator(rendered: dict[str, str]) -> None:
    """What the chart restates (YAML cannot import Python): version and image, the
    resource's names, the example shards' names, and the worker pods' labels and port as
    the operator renders them."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == VERSION
    assert values["image"]["repository"] == IMAGE_REPOSITORY
    docs = documents(rendered["examples"])
    operator = container(find(docs, "Deployment", "-operator"))
    assert flags(operator["args"][1:])["--worker-image"] == default_image()
    shards = [d for d in docs if d.get("kind") == CRD.kind]
    assert shards
    for shard in shards:
        assert shard["apiVersion"] == CRD.api_version
        check_shard_name(shard["metadata"]["name"])
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    granted = {
        resource
        for role in roles
        for rule in role["rules"]
        if CRD.group in rule.get("apiGroups", [])
        for resource in rule["resources"]
    }
    assert granted == {CRD.plural, f"{CRD.plural}/status", f"{CRD.plural}/finalizers"}

    spec = WhatsAppShardSpec.model_validate(shards[0]["spec"])
    sts = children.statefulset("w1", "wasp", "uid", spec, OperatorConfig())
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    worker_port = sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert worker_port == WORKER_PORT
    policy = find(docs, "NetworkPolicy", "-workers")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == [worker_port]
    ports = {
        p["name"]: p["containerPort"]
        for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert [p["port"] for p in policy["ingress"][1]["ports"]] == [ports["metrics"]]
    assert ports["metrics"] == WORKER_METRICS_PORT
    budget = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    monitor = find(docs, "PodMonitor")["spec"]
    for selector in [b["spec"]["selector"] for b in budget] + [monitor["selector"]]:
        if selector["matchLabels"].get("app.kubernetes.io/name") == "wasp-worker":
            assert selector["matchLabels"].items() <= pod_labels.items()
    shard_label = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-z0-9]", "_", children.SHARD_LABEL)
    relabel = monitor["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == [shard_label]
