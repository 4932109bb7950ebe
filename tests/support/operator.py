"""`wasp operator` as a real process against the loopback cluster.

kwok runs no containers, so nothing answers at a worker pod's cluster address.
By default the operator reads workers' /health from a closed local port (a fast,
honest failure); a test that wants `active` figures runs a real `wasp worker`
and points `health_url_template` at it.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.cluster import LocalCluster
from tests.support.processes import ProgramProcess, free_port, http_ok, http_text

CLOSED_PORT = "http://127.0.0.1:9/{namespace}/{name}"


class OperatorProcess(ProgramProcess):
    """`wasp operator` for one namespace, with metrics and liveness on free ports."""

    def __init__(
        self,
        cluster: LocalCluster,
        namespace: str,
        log: Path,
        *extra: str,
        health_url_template: str = CLOSED_PORT,
    ) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        args = [
            "operator",
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--metrics-listen",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--status-interval",
            "1",
            "--worker-image",
            "registry.invalid/wasp:test",
        ]
        args += ["--health-url-template", health_url_template]
        super().__init__([*args, *extra], log, env=cluster.env())

    def start(self) -> OperatorProcess:
        super().start()
        self.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.liveness_port}/healthz"),
            "operator liveness endpoint",
        )
        return self

    def metrics(self) -> str:
        return http_text(f"http://127.0.0.1:{self.metrics_port}/metrics")
