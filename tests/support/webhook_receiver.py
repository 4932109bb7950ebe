"""A webhook receiver in a thread, for tests with real `wasp worker` processes: it
verifies every request with the official Standard Webhooks library, records it, and
answers what the test scripts. It can be down (its port closed) and up again."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from wasp.webhooks import new_secret


@dataclass(frozen=True)
class Arrival:
    event: dict[str, Any]
    status: int


def subscribe(
    config_dir: Path, subscription: str, url: str, secret: str, events: list[str]
) -> None:
    """Write webhooks.json and the secrets file for one loopback receiver, as the master
    does (loopback allowed explicitly)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "subscriptions": [{"id": subscription, "url": url, "events": events}],
        "allow": ["127.0.0.0/8"],
    }
    (config_dir / "webhooks.json").write_text(json.dumps(document))
    (config_dir / "webhook-secrets.json").write_text(json.dumps({subscription: secret}))


# (event, how many times its id came before) -> (status, seconds to wait before answering)
Script = Callable[[dict[str, Any], int], tuple[int, float]]


class ThreadedReceiver:
    def __init__(self, port: int, secret: str | None = None) -> None:
        self.port = port
        self.secret = secret or new_secret()
        self.script: Script = lambda event, seen: (200, 0.0)
        self.arrivals: list[Arrival] = []
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def subscribe(self, config_dir: Path, subscription: str, events: list[str]) -> None:
        subscribe(config_dir, subscription, self.url, self.secret, events)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    event = Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    with receiver._lock:
                        receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    seen = sum(1 for a in receiver.arrivals if a.event["id"] == event["id"])
                status, delay = receiver.script(event, seen)
                if delay:
                    threading.Event().wait(delay)
                with receiver._lock:
                    receiver.arrivals.append(Arrival(event, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[dict[str, Any]]:
        """Each event once, by webhook-id, in the order of its first 2xx."""
        with self._lock:
            arrivals = list(self.arrivals)
        seen: dict[str, dict[str, Any]] = {}
        for arrival in arrivals:
            if 200 <= arrival.status < 300 and arrival.event["id"] not in seen:
                seen[arrival.event["id"]] = arrival.event
        return list(seen.values())
