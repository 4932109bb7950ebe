"""Run helm on charts/wasp and read what it renders."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import ROOT

CHART = ROOT / "charts" / "wasp"
EXAMPLES = Path(__file__).with_name("values-examples.yaml")

Manifest = dict[str, Any]


class Helm:
    def __init__(self, bin_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.bin_dir = bin_dir
        self.env = dict(env) if env is not None else None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / "helm"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result

    def template(self, *args: str, namespace: str = "wasp") -> str:
        return self.run(
            "template",
            "rel",
            str(CHART),
            "--namespace",
            namespace,
            *args,
        ).stdout


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{len(found)} {kind} named *{name_suffix}"
    return found[0]


def container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict (the chart writes every flag that way)."""
    out = {}
    for arg in args:
        name, equals, value = arg.partition("=")
        assert name.startswith("--"), f"not --flag=value: {arg!r}"
        assert equals, f"not --flag=value: {arg!r}"
        out[name] = value
    return out
