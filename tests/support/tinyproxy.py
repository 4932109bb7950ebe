"""A real HTTP proxy for tests: tinyproxy on 127.0.0.1, in the foreground, logging every
connection and request line to a file the test reads."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Tinyproxy:
    def __init__(
        self,
        directory: Path,
        credentials: tuple[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        if shutil.which("tinyproxy") is None:
            pytest.fail("tinyproxy is not installed (apt-get install -y tinyproxy)")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = directory / "tinyproxy.log"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 5",
            f'LogFile "{self.log}"',
            "LogLevel Connect",
            "MaxClients 20",
        ]
        if credentials is not None:
            lines.append(f"BasicAuth {credentials[0]} {credentials[1]}")
        self.conf = directory / "tinyproxy.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Tinyproxy:
        self.process = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("tinyproxy did not start listening")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def requests(self) -> list[str]:
        """The request lines the proxy received (e.g. `CONNECT web.whatsapp.com:443 HTTP/1.1`)."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line.split("): ", 1)[1] for line in text.splitlines() if "Request (" in line]

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""
