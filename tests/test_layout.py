"""The repository layout: the standard library's `operator` module stays reachable, and
imports point one way (the rules are stated below, with the tests that hold them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

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


# -- import rules -------------------------------------------------------------
#
# Layers, bottom to top:
#   core      every module of `wasp` except the top: slots, shard model, contract,
#             OpenAPI and the worker's API declaration, messages, errors, kube, logs
#   programs  wasp_worker, wasp_master, wasp_operator: each imports the core and itself
#   top       wasp.cli and wasp.dev, which start the programs: they may import anything
# Imports are read from the source (ast), including those inside functions and
# under TYPE_CHECKING: a lazy import is still a dependency.

PROGRAMS = {"wasp_worker": "worker", "wasp_master": "master", "wasp_operator": "operator"}
TOP = {"wasp.cli", "wasp.dev"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in PROGRAMS.values():
        parts = parts[1:]  # operator/wasp_operator/x.py is wasp_operator.x
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    folders = [ROOT / "wasp", *(ROOT / folder / package for package, folder in PROGRAMS.items())]
    return {_module_name(p): p for folder in folders for p in sorted(folder.rglob("*.py"))}


def imports_of(module: str, path: Path) -> set[str]:
    """Every module `module` names in an import; `from a import b` names a and a.b."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


SOURCES = _sources()
IMPORTS = {module: imports_of(module, path) for module, path in SOURCES.items()}


def violations(modules: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    banned = list(forbidden)
    return sorted(
        f"{module} imports {name}"
        for module in modules
        for name in IMPORTS[module]
        if any(_within(name, prefix) for prefix in banned)
    )


def test_the_import_rules_see_every_layer() -> None:
    # A moved folder must not turn the rules below into checks of nothing.
    for layer in ["wasp.slots", "wasp.worker_api", *TOP, *PROGRAMS]:
        assert layer in SOURCES, layer
    assert any("wasp_worker.app" in names for names in IMPORTS.values())


def test_the_core_imports_no_program_and_not_the_top() -> None:
    core = [m for m in SOURCES if _within(m, "wasp") and m not in TOP]
    assert violations(core, [*PROGRAMS, *TOP]) == []


def test_each_program_imports_only_the_core_and_itself() -> None:
    for program in PROGRAMS:
        own = [m for m in SOURCES if _within(m, program)]
        others = [p for p in PROGRAMS if p != program]
        assert violations(own, [*others, *TOP]) == [], program


def test_the_backend_interface_and_backends_do_not_import_the_queue() -> None:
    # A backend sends what `backends.base.Outgoing` describes, whatever stores it.
    backends = [m for m in SOURCES if _within(m, "wasp_worker.backends")]
    assert "wasp_worker.backends.base" in backends
    assert violations(backends, ["wasp_worker.queue"]) == []


def test_the_real_backend_does_not_import_the_simulator() -> None:
    neonize = [m for m in SOURCES if m.startswith("wasp_worker.backends.neonize")]
    assert len(neonize) >= 2
    assert violations(neonize, ["wasp_worker.backends.simulator"]) == []


KUBE_CLIENT_FACTORIES = {
    "ApiClient",
    "load_incluster_config",
    "load_kube_config",
    "new_client_from_config",
}


def test_one_module_builds_kubernetes_clients() -> None:
    # Credentials are read one way in every program: `wasp.kube.api_client`.
    builders = set()
    for module, path in SOURCES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                called = node.func
                name = (
                    called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
                )
                if name in KUBE_CLIENT_FACTORIES:
                    builders.add(module)
    assert builders == {"wasp.kube"}


def test_both_programs_errors_share_the_core_base() -> None:
    from wasp_master import errors as master_errors
    from wasp_worker import errors as worker_errors

    from wasp.errors import ApiError
    from wasp.openapi import InvalidInput

    for module in (master_errors, worker_errors):
        defined = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == module.__name__
        ]
        assert defined, module
        assert all(issubclass(kind, ApiError) for kind in defined), module
    assert issubclass(InvalidInput, ApiError)


def test_the_worker_binds_a_handler_to_every_operation_of_its_api() -> None:
    from wasp_worker.http_api import HANDLERS

    from wasp import worker_api
    from wasp.openapi import bind

    routes = bind(worker_api.ENDPOINTS, HANDLERS)
    assert len(routes) == len(worker_api.ENDPOINTS)
    for name in ("send", "health"):
        incomplete = {k: v for k, v in HANDLERS.items() if k != name}
        with pytest.raises(ValueError, match=f"missing \\['{name}'\\]"):
            bind(worker_api.ENDPOINTS, incomplete)
    with pytest.raises(ValueError, match="unknown \\['sned'\\]"):
        bind(worker_api.ENDPOINTS, {**HANDLERS, "sned": HANDLERS["send"]})
