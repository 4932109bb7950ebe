"""`cluster up` / `cluster down` on a second, private control plane: nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(") ", 1)[-1][:1]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def test_up_serves_a_ready_node_and_down_leaves_no_process(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    private = LocalCluster(tmp_path / "cluster", bin_dir=cluster.bin_dir)
    try:
        private.up()
        assert private.is_up()
        state = private.state
        assert state is not None
        assert set(state.pids) == {
            "etcd",
            "apiserver",
            "controller_manager",
            "scheduler",
            "kwok",
            "provisioner",
        }
        assert len(processes_mentioning(str(tmp_path))) >= len(state.pids)
        nodes = private.kubectl("get", "nodes", "-o", "name").split()
        assert "node/kwok-node-0" in nodes
        # Up again is a no-op on a running cluster.
        assert private.up() == 0.0
        assert private.state == state
    finally:
        private.down()
    assert processes_mentioning(str(tmp_path)) == []
    assert not private.is_up()
    assert private.state is None
