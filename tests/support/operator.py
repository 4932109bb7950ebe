"""`wasp operator` as a real process against the loopback cluster, and a /health stand-in.

Until the worker exists (issue 4) nothing answers at a worker pod's address:
kwok runs no containers. `HealthStandIn` answers `/health` in the worker's
documented shape, so the operator's status polling is exercised over real HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.cluster import LocalCluster
from tests.support.processes import ProgramProcess, free_port, http_ok, http_text


@dataclass
class HealthStandIn:
    """Serves `/<namespace>/<name>/health` like a worker with `active` sessions."""

    active: dict[str, int] = field(default_factory=dict)  # by shard name
    port: int = 0

    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{namespace}}/{{name}}"


@contextmanager
def health_stand_in() -> Iterator[HealthStandIn]:
    state = HealthStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[2] != "health" or parts[1] not in state.active:
                self.send_error(404)
                return
            body = json.dumps(
                {
                    "ok": True,
                    "worker": {
                        "port": 8080,
                        "slotFrom": "A1",
                        "slotTo": "A50",
                        "active": state.active[parts[1]],
                        "maxActive": 20,
                    },
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class OperatorProcess(ProgramProcess):
    """`wasp operator` for one namespace, with metrics and liveness on free ports."""

    def __init__(
        self,
        cluster: LocalCluster,
        namespace: str,
        log: Path,
        *extra: str,
        health: HealthStandIn | None = None,
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
        if health is not None:
            args += ["--health-url-template", health.url_template()]
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
