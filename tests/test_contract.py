"""The shared contract, tied to each program that derives from it.

A shard name is checked in three places (the CRD's metadata.name rule, a shards
file's `id`, a worker's SHARD_NAME): all three must accept exactly the names an
independent oracle, written here from Kubernetes' DNS-1035 label rules, accepts.
`wasp dev` renders each worker's environment: the worker's own loader must read
back every field as planned. And the contract's public values (what clusters,
charts and scripts already use) are pinned here, in one place.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from wasp_master.shards import parse_shards
from wasp_worker.config import WorkerConfig

from wasp import crd
from wasp.contract import (
    CRD,
    MASTER_METRICS_PORT,
    MAX_BODY_BYTES,
    RESERVED_ENV,
    VERSION,
    WORKER_METRICS_PORT,
    WORKER_TOKEN_HEADER,
    WORKER_TOKEN_MIN_LENGTH,
    WorkerEnv,
    default_image,
    parse_tokens,
    worker_endpoint,
)
from wasp.dev import BadShards, DevOptions, plan

# Kubernetes' DNS-1035 label (IsDNS1035Label): at most 63 characters, lower-case
# letters, digits and '-', starting with a letter, ending with a letter or digit.
_LETTERS = frozenset(string.ascii_lowercase)
_LETTERS_DIGITS = _LETTERS | frozenset(string.digits)
# wasp's own bound: the StatefulSet controller appends a revision hash to the name.
WASP_MAX = 52


def dns1035_label(name: str) -> bool:
    return (
        0 < len(name) <= 63
        and name[0] in _LETTERS
        and name[-1] in _LETTERS_DIGITS
        and all(c in _LETTERS_DIGITS or c == "-" for c in name)
    )


def oracle(name: str) -> bool:
    return dns1035_label(name) and len(name) <= WASP_MAX


def shards_file_accepts(name: str) -> bool:
    entry = {"id": name, "port": 3001, "from": "A1", "to": "A5"}
    try:
        parse_shards(yaml.safe_dump([entry]))
    except ValueError:
        return False
    return True


def _crd_name_rule() -> tuple[int, re.Pattern[str]]:
    """The committed CRD's metadata.name rule: its size bound and its pattern."""
    committed = yaml.safe_load(crd.CRD_FILES[0].read_text())
    schema = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (rule,) = [
        v["rule"] for v in schema["x-kubernetes-validations"] if "metadata.name" in v["rule"]
    ]
    found = re.fullmatch(
        r"self\.metadata\.name\.size\(\) <= (\d+) && self\.metadata\.name\.matches\('(.+)'\)",
        rule,
    )
    assert found, rule
    # CEL's matches() is RE2's unanchored search, where `$` is the end of the text only;
    # Python's `$` would also match before a final newline, so it becomes `\Z`.
    return int(found[1]), re.compile(found[2].replace("$", r"\Z"))


CRD_MAX, CRD_PATTERN = _crd_name_rule()


def crd_accepts(name: str) -> bool:
    return len(name) <= CRD_MAX and CRD_PATTERN.search(name) is not None


def worker_accepts(name: str) -> bool:
    try:
        with mock.patch.dict(os.environ, clear=False):
            for var in WorkerConfig.env_names():
                os.environ.pop(var, None)
            os.environ.update({"SLOT_FROM": "A1", "SLOT_TO": "A5", "SHARD_NAME": name})
            WorkerConfig()
    except ValueError:
        return False
    return True


_NAMES = st.one_of(
    st.from_regex(r"\A[a-z][-a-z0-9]{0,60}\Z"),  # near the rule: length and '-' matter
    st.text(alphabet="az09-_.A\n ", max_size=60),
    # Anything a process environment can hold (non-ASCII letters and digits included).
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8),
    st.integers(1, 70).map(lambda n: "w" * n),
)

EDGES = ["9w", "w-", "-w", "w", "w1", "w" * 52, "w" * 53, "W1", "w.1", "w_1", "w1\n", "", "wé"]


def _all_agree_with_the_oracle(name: str) -> None:
    expected = oracle(name)
    assert shards_file_accepts(name) == expected, "shards file"
    assert crd_accepts(name) == expected, "CRD"
    assert worker_accepts(name) == expected, "worker"


@pytest.mark.parametrize("name", EDGES)
def test_edge_names_are_judged_alike(name: str) -> None:
    _all_agree_with_the_oracle(name)


@settings(max_examples=300, deadline=None)
@given(_NAMES)
def test_one_shard_name_grammar_for_the_crd_the_shards_file_and_the_worker(name: str) -> None:
    _all_agree_with_the_oracle(name)


def test_wasp_dev_refuses_a_shards_file_every_worker_would_refuse(tmp_path: Path) -> None:
    shards = tmp_path / "shards.yaml"
    shards.write_text("- {id: 9w, port: 7001, from: A1, to: A50}\n")
    with pytest.raises(BadShards, match=r"shards\.0\.id: .*invalid shard name '9w'"):
        plan(DevOptions(shards, data_dir=tmp_path / "dev"), {}, "token")


def test_wasp_dev_env_is_read_back_by_the_worker_field_by_field(tmp_path: Path) -> None:
    shards = tmp_path / "shards.yaml"
    shards.write_text(
        "- {id: w1, port: 7001, from: A1, to: A50, maxActive: 7, maxInit: 3, warmupLimit: 4}\n"
        "- {id: w2, port: 7002, from: B1, to: B9, workdir: elsewhere}\n"
    )
    options = DevOptions(shards, data_dir=tmp_path / "dev", port=7000, metrics_base_port=7100)
    # A stray WORKER_TOKENS or METRICS_PORT of the caller's does not reach the children.
    base = {
        "PATH": "/usr/bin",
        "PORT": "1",
        "LEASE_DURATION_S": "30",
        "WORKER_TOKENS": "stray-token-0123456789",
        "METRICS_PORT": "1",
    }
    layout = plan(options, base, "s3cr3t", "worker-token-of-this-run")
    data = (tmp_path / "dev").resolve()
    expected: list[dict[str, Any]] = [
        {
            "shard_name": "w1",
            "port": 7001,
            "slot_from": "A1",
            "slot_to": "A50",
            "max_active": 7,
            "max_init": 3,
            "warmup_limit": 4,
            "work_dir": data / "w1",
            "metrics_port": 7101,
        },
        {
            "shard_name": "w2",
            "port": 7002,
            "slot_from": "B1",
            "slot_to": "B9",
            "work_dir": data / "elsewhere",
            "metrics_port": 7102,
        },
    ]
    common = {
        "host": "127.0.0.1",
        "config_dir": data / "config",
        "backend": "simulator",
        "master_internal_url": "http://127.0.0.1:7000",
        "master_token": "s3cr3t",
        "worker_tokens": "worker-token-of-this-run",
        "lease_duration_s": 30,  # the caller's environment passes through
        "simulator_server_dir": data / "simulator-server",  # one server: messages cross shards
    }
    defaults = WorkerConfig.model_construct()
    for child, planned in zip(layout.children[:-1], expected, strict=True):
        with mock.patch.dict(os.environ, child.env, clear=True):
            worker = WorkerConfig()  # what `wasp worker` does in the child
        want = {**common, **planned}
        for field in WorkerConfig.model_fields:
            value = getattr(worker, field)
            shown = str(value) if field in ("slot_from", "slot_to") else value
            expected_value = want[field] if field in want else getattr(defaults, field)
            assert shown == expected_value, (child.name, field)
        assert child.url == f"http://127.0.0.1:{worker.port}"
    # The master sends what the workers accept, and serves its metrics on its own port.
    assert layout.master.env["WORKER_TOKENS"] == "worker-token-of-this-run"
    assert layout.master.env["METRICS_PORT"] == "7100"
    assert layout.metrics["master"] == "http://127.0.0.1:7100/metrics"


def test_wasp_dev_makes_a_worker_token_per_run(tmp_path: Path) -> None:
    shards = tmp_path / "shards.yaml"
    shards.write_text("- {id: w1, port: 7001, from: A1, to: A50}\n")
    options = DevOptions(shards, data_dir=tmp_path / "dev", port=7000)
    runs = [plan(options, {}, "token") for _ in range(2)]
    tokens = [run.master.env["WORKER_TOKENS"] for run in runs]
    assert tokens[0] != tokens[1]
    for run, token in zip(runs, tokens, strict=True):
        assert run.children[0].env["WORKER_TOKENS"] == token
        assert len(token) >= WORKER_TOKEN_MIN_LENGTH


@pytest.mark.parametrize("text", ["short", "has space in it 0123456789", "ok-token-0123456789,bad"])
def test_worker_tokens_are_refused_by_the_rule_without_showing_them(text: str) -> None:
    with pytest.raises(ValueError, match="WORKER_TOKENS: token") as refused:
        WorkerEnv.model_validate({"slot_from": "A1", "slot_to": "A2", "worker_tokens": text})
    assert text not in str(refused.value)
    assert parse_tokens(" new-token-0123456789 , old-token-0123456789 ") == (
        "new-token-0123456789",
        "old-token-0123456789",
    )


def test_the_published_values_stay_as_published() -> None:
    """Clusters, charts, scripts and running pods use these; a change here is a migration."""
    assert (CRD.group, CRD.version, CRD.kind, CRD.plural) == (
        "wasp.dev",
        "v1alpha1",
        "WhatsAppShard",
        "whatsappshards",
    )
    assert CRD.crd_name == "whatsappshards.wasp.dev"
    assert CRD.short_names == ("wash",)
    assert worker_endpoint("w1", "crm") == "http://w1-0.w1.crm.svc:8080"
    assert MAX_BODY_BYTES == 1 << 20
    assert default_image() == f"ghcr.io/wasp-dev/wasp:{VERSION}"
    assert WorkerEnv.env_names() == (
        "SHARD_NAME",
        "POD_NAMESPACE",
        "POD_NAME",
        "PORT",
        "SLOT_FROM",
        "SLOT_TO",
        "MAX_ACTIVE",
        "MAX_INIT",
        "WARMUP_LIMIT",
        "CONFIGDIR",
        "WORKDIR",
        "BACKEND",
        "MASTER_INTERNAL_URL",
        "MASTER_TOKEN",
        "WORKER_TOKENS",
        "WORKER_INSECURE",
        "METRICS_PORT",
        "HOST",
        "LEASE_DURATION_S",
        "LEASE_RENEW_DEADLINE_S",
        "LEASE_RETRY_PERIOD_S",
        "ACCESS_LOG",
        "SIMULATOR_SERVER_DIR",
        "BAD_MAC_THRESHOLD",
        "BAD_MAC_WINDOW_MS",
        "BAD_MAC_COOLDOWN_MS",
        "SEND_CONCURRENCY",
        "SEND_MAX_ATTEMPTS",
        "SEND_MAX_AGE_S",
        "SEND_RETRY_BASE_S",
        "SEND_RETRY_CAP_S",
        "SEND_TIMEOUT_S",
        "PACING_SESSION_PER_MINUTE",
        "PACING_SESSION_BURST",
        "PACING_RECIPIENT_PER_MINUTE",
        "PACING_RECIPIENT_BURST",
        "PACING_JITTER",
        "RETENTION_MAX_AGE_DAYS",
        "RETENTION_MAX_MESSAGES_PER_CHAT",
        "RETENTION_SYNC_HORIZON_DAYS",
        "RETENTION_INTERVAL_S",
        "RETENTION_BATCH",
        "RETENTION_SYNC_BATCH",
        "WEBHOOK_SECRETS_FILE",
        "PROXY_CREDENTIALS_FILE",
        "WEBHOOK_HORIZON_S",
        "WEBHOOK_TIMEOUT_S",
        "WEBHOOK_RETRY_BASE_S",
        "WEBHOOK_RETRY_CAP_S",
    )
    # The operator's: the first 17, and the pace and retention the shard's spec sets.
    names = WorkerEnv.env_names()
    from_spec = ("PACING_", "RETENTION_MAX_", "RETENTION_SYNC_HORIZON_")
    assert names[:17] + tuple(n for n in names if n.startswith(from_spec)) == RESERVED_ENV
    assert (WORKER_METRICS_PORT, MASTER_METRICS_PORT) == (9090, 9091)
    assert WORKER_TOKEN_HEADER == "x-wasp-worker-token"


def test_the_shared_core_imports_no_program() -> None:
    core = Path(crd.__file__).parent
    for module in core.glob("*.py"):
        if module.name in ("cli.py", "dev.py"):
            continue  # the command line is the top of the stack: it starts the programs
        text = module.read_text()
        assert not re.search(r"^\s*(from|import) wasp_(worker|master|operator)", text, re.M), (
            module.name
        )
