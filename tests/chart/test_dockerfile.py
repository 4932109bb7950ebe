"""The Dockerfile, checked without a Docker engine (none runs on these machines).

hadolint lints it; its key properties are asserted; and its install steps (the
`pip` RUN lines) are run for real, in the same order, in fresh virtual
environments standing in for each stage's Python, so a broken build step or an
image where neonize's Go library cannot load fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.dockerfile import Stage, parse
from tests.support.cluster import ROOT, tools_bin_dir
from wasp.contract import VERSION

DOCKERFILE = ROOT / "Dockerfile"
BASE = "python:3.11-slim-bookworm"
# What python:3.11-slim-bookworm's glibc (2.36) provides; neonize's library
# must need nothing beyond these (no extra apt packages in the image).
GLIBC_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libresolv.so.2"}
GLIBC_MAX = (2, 36)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE)[1]


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(tools_bin_dir() / "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_slim_image_for_all_roles_running_as_uid_10001(stages: list[Stage]) -> None:
    builder, final = stages[0], stages[-1]
    assert len(stages) == 2
    assert builder.name == "builder"
    assert final.name is None
    assert builder.base == final.base == BASE
    assert final.all("USER") == ["10001:10001"]
    assert final.json_form("ENTRYPOINT") == ["wasp"]
    # Only the builder sees the sources; the final stage gets wheels only.
    assert not final.all("COPY")
    assert not final.all("ADD")
    user, install = final.runs()
    assert "--uid 10001" in user
    assert "--gid 10001" in user
    assert install.startswith("pip install --no-index")
    # The pinned distribution is the project's own version.
    assert f'"wasp=={VERSION}"' in install


def test_dockerignore_lets_in_exactly_what_is_copied(stages: list[Stage]) -> None:
    copied = {
        source.rstrip("/")
        for args in stages[0].all("COPY")
        for source in args.split()[:-1]
        if not source.startswith("--")
    }
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert "*" in lines
    assert allowed == copied


def test_install_steps_build_a_working_image_tree(
    stages: list[Stage], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each stage's `pip` RUN lines, verbatim, with its paths under a temporary root."""
    root = tmp_path_factory.mktemp("image")
    reroot = {"/src": root / "src", "/wheels": root / "wheels"}

    def stage_env(stage: Stage, venv: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
        for key, value in stage.env().items():
            env[key] = str(reroot.get(value, value))
        # The image keeps no pip cache (smaller layers); here the cache saves downloads.
        env.pop("PIP_NO_CACHE_DIR", None)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        return env

    def run_pip_steps(stage: Stage, venv: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        workdir = Path(str(reroot.get(stage.workdir(), root)))
        workdir.mkdir(parents=True, exist_ok=True)
        env = stage_env(stage, venv)
        steps = [command for command in stage.runs() if command.startswith("pip ")]
        assert steps, f"no pip step in stage {stage.name}"
        for command in steps:
            result = subprocess.run(
                ["sh", "-c", command], cwd=workdir, env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr}"

    builder, final = stages[0], stages[-1]
    # The builder's build context: what its COPY lines take from the repository.
    for args in builder.all("COPY"):
        *sources, dest = args.split()
        target = reroot["/src"] / dest
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite*")
                shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target / path.name)
    run_pip_steps(builder, root / "builder-venv")
    assert any(reroot["/wheels"].glob("neonize-*.whl"))
    run_pip_steps(final, root / "image-venv")

    bin_dir = root / "image-venv" / "bin"
    help_text = subprocess.run(
        [str(bin_dir / "wasp"), "--help"], check=True, capture_output=True, text=True
    ).stdout
    for role in ("operator", "master", "worker"):
        assert role in help_text
    # neonize's Go library loads from the installed wheel, at the version the
    # package expects (a mismatch would make neonize try to download one).
    check = (
        "import ctypes, neonize.download as d, neonize.utils.platform as p, pathlib;"
        "lib = pathlib.Path(d.__file__).parent / p.generated_name();"
        "go = ctypes.CDLL(str(lib)); go.GetVersion.restype = ctypes.c_char_p;"
        "assert go.GetVersion().decode() == d.__GONEONIZE_VERSION__;"
        "print(lib)"
    )
    library = subprocess.run(
        [str(bin_dir / "python"), "-c", check], check=True, capture_output=True, text=True
    ).stdout.strip()
    needed = subprocess.run(
        ["readelf", "-d", "--wide", library], check=True, capture_output=True, text=True
    ).stdout
    libraries = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed))
    assert libraries <= GLIBC_LIBS, f"needs more than the slim image has: {libraries}"
    symbols = subprocess.run(
        ["objdump", "-T", library], check=True, capture_output=True, text=True
    ).stdout
    versions = {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([0-9.]+)", symbols)}
    assert max(versions) <= GLIBC_MAX, f"needs glibc {max(versions)}, bookworm has 2.36"
