"""The web console in a real headless Chromium (playwright-core) against `wasp dev`:
log A1 in with its QR code, log A2 in, send from A1 to A2, see it unread with its text
in A2's chat list (the store's conversations), read it in A2's page, find it with the
search across shards (with a message to A51 on the other shard) and open a hit; and,
with API keys, the key asked once and kept. Screenshots land in test-artifacts/console/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ROOT
from tests.support.dev import start_dev

JS = ROOT / "tests" / "js"
ARTIFACTS = ROOT / "test-artifacts" / "console"
TIMEOUT_S = 150


def chromium() -> str:
    if not (JS / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is missing: make js")
    for candidate in (os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run does)")
    return found


def drive(tmp_path: Path, *script_args: str, env: dict[str, str] | None = None) -> list[Any]:
    """`wasp dev`, then `node console.mjs` against it; the script's steps (JSON lines)."""
    browser = chromium()
    run = start_dev(tmp_path, env=env)
    try:
        done = subprocess.run(
            ["node", str(JS / "console.mjs"), f"{run.url}/", str(ARTIFACTS), *script_args],
            cwd=JS,
            env={**os.environ, "CHROMIUM": browser},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    finally:
        os.kill(run.process.pid, signal.SIGTERM)
        assert run.process.process is not None
        run.process.process.wait(30)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{run.process.output()[-3000:]}"
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert steps[-1]["step"] == "done"
    return [step["step"] for step in steps]


def test_console_logs_slots_in_and_delivers_a_message(tmp_path: Path) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    steps = drive(tmp_path)
    for wanted in (
        "A1 shows its QR code",
        "A1 scanned: connected",
        "A2's chat list shows it unread, with the message",
        "A2 received it",
        "search finds it across shards",
        "a hit opens its chat",
    ):
        assert wanted in steps
    for shot in (
        "01-overview",
        "02-a1-qr",
        "04-a2-unread",
        "04-a2-received",
        "05-console",
        "06-phone-a2",
        "07-search",
        "08-hit-opened",
    ):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 10_000, shot


def test_console_asks_for_the_api_key_once(tmp_path: Path) -> None:
    steps = drive(tmp_path, "console-key-5d1e", env={"API_KEYS": "other-key,console-key-5d1e"})
    assert "a wrong key is refused" in steps
    assert "kept for the next visit" in steps
