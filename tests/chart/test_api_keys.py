"""The chart's API keys: hashed records in a Secret, mounted as the master's keys
file (a directory mount, so updates reach the running master), rendered by helm."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from click.testing import CliRunner
from wasp_master.keys import parse_keys

from tests.chart.helm import CHART, EXAMPLES, Helm, Manifest, container, documents, find
from tests.support.cluster import tools_bin_dir
from wasp.cli import main as cli

MOUNT = "/etc/wasp/keys"


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm(tools_bin_dir())


def keys_file(docs: list[Manifest]) -> str:
    text: str = find(docs, "Secret", "-api-keys")["stringData"]["keys.yaml"]
    return text


def master_pod(docs: list[Manifest]) -> Manifest:
    spec: Manifest = find(docs, "Deployment", "-master")["spec"]["template"]["spec"]
    return spec


def test_records_become_the_mounted_keys_file_the_master_reads(helm: Helm) -> None:
    docs = documents(helm.template("-f", str(EXAMPLES)))
    examples = yaml.safe_load(EXAMPLES.read_text())["apiKeys"]["records"]
    records = parse_keys(keys_file(docs), "rendered keys.yaml")  # the master's own parser
    assert [r.model_dump(mode="json", exclude_none=True) for r in records] == examples

    secret = find(docs, "Secret", "-api-keys")["metadata"]["name"]
    pod = master_pod(docs)
    master = container(find(docs, "Deployment", "-master"))
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in master["env"]}
    assert env["API_KEYS_FILE"] == f"{MOUNT}/keys.yaml"
    (mount,) = [m for m in master["volumeMounts"] if m["mountPath"] == MOUNT]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees the Secret change
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret
    # Rotation must not restart the master: no checksum of the keys on the pod.
    annotations = find(docs, "Deployment", "-master")["spec"]["template"]["metadata"]
    assert all("api-keys" not in k for k in annotations.get("annotations", {}))


def test_default_keys_file_is_empty_not_absent(helm: Helm) -> None:
    docs = documents(helm.template())
    assert yaml.safe_load(keys_file(docs)) == {"keys": []}
    assert parse_keys(keys_file(docs), "rendered keys.yaml") == ()


def test_a_key_made_by_the_cli_is_stored_only_hashed(helm: Helm) -> None:
    made = CliRunner().invoke(
        cli, ["keys", "new", "--id", "ops", "--ops", "admin", "--format", "json"]
    )
    assert made.exit_code == 0, made.output
    key = made.stderr.strip().splitlines()[-1]
    rendered = helm.template("--set-json", f"apiKeys.records=[{made.stdout.strip()}]")
    assert key not in rendered
    (record,) = parse_keys(keys_file(documents(rendered)), "rendered keys.yaml")
    assert record.id == "ops"
    assert record.hash == json.loads(made.stdout)["hash"]


def test_an_existing_secret_replaces_the_charts(helm: Helm) -> None:
    docs = documents(helm.template("--set", "apiKeys.existingSecret=my-keys"))
    assert not [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-api-keys")
    ]
    volumes = {v["name"]: v for v in master_pod(docs)["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "my-keys"


def test_no_generated_full_access_key_when_switched_off(helm: Helm) -> None:
    docs = documents(helm.template("--set", "credentials.generateApiKey=false"))
    data = find(docs, "Secret", "-credentials")["data"]
    assert base64.b64decode(data["api-keys"]) == b""
    default = find(documents(helm.template()), "Secret", "-credentials")["data"]
    assert len(base64.b64decode(default["api-keys"])) == 40


@pytest.mark.parametrize(
    "record",
    [
        {"id": "x", "hash": "sha256:abc", "operations": ["read"]},
        {"id": "x", "hash": "sha256:" + "a" * 64, "operations": ["delete"]},
        {"id": "x", "hash": "sha256:" + "a" * 64, "operations": ["read"], "slots": ["A1-B2x"]},
        {
            "id": "x",
            "hash": "sha256:" + "a" * 64,
            "operations": ["read"],
            "slots": ["A1-A5"],
            "workspaces": ["w"],
        },
    ],
    ids=["short-hash", "unknown-operation", "bad-range", "two-scopes"],
)
def test_values_schema_refuses_bad_records(helm: Helm, record: dict[str, object]) -> None:
    result = helm.run(
        "template",
        "rel",
        str(CHART),
        "--set-json",
        f"apiKeys.records=[{json.dumps(record)}]",
        check=False,
    )
    assert result.returncode != 0, record
    assert "schema" in result.stderr, result.stderr
