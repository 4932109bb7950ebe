"""The accounts' proxy credentials reach the workers the way webhook secrets do: a key of
the same Secret, mounted read-only, the worker's PROXY_CREDENTIALS_FILE inside the mount."""

from __future__ import annotations

from pathlib import Path

from wasp_operator import children
from wasp_operator.config import OperatorConfig
from wasp_worker.config import WorkerConfig

from tests.operator.test_children import CONFIG, env_of, spec


def test_proxy_credentials_are_read_from_the_mounted_secret() -> None:
    plain = children.statefulset("w1", "crm", "uid-1", spec(), CONFIG)
    assert "PROXY_CREDENTIALS_FILE" not in env_of(plain)
    config = OperatorConfig(webhook_signing_secret="rel-webhook-secrets")
    sts = children.statefulset("w1", "crm", "uid-1", spec(), config)
    pod = sts["spec"]["template"]["spec"]
    mount = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}["webhook-secrets"]
    file = env_of(sts)["PROXY_CREDENTIALS_FILE"]
    assert Path(file) == Path(mount["mountPath"]) / "proxy-credentials.json"
    assert WorkerConfig.model_validate(
        {"slot_from": "A1", "slot_to": "A2", "proxy_credentials_file": file}
    ).proxy_credentials_file == Path(file)
