"""The repository layout keeps the standard library's `operator` module reachable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_operator_from_repo_root_is_the_standard_library() -> None:
    # `python -m` puts the working directory first on sys.path, as pytest does.
    code = "import operator, sys; print(operator.__file__); print(operator.itemgetter)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = out.splitlines()[0]
    assert not path.startswith(str(ROOT)), path
    assert Path(path).name == "operator.py"


def test_no_import_package_is_named_operator() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "wasp" / "operator").exists()
    assert not (ROOT / "wasp" / "operator.py").exists()


def test_wasp_cli_lists_every_role() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wasp.cli", "--help"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for role in ("operator", "master", "worker", "dev"):
        assert f"  {role} " in out
