"""SIGKILL a real `wasp worker` while it takes and drains 1,000 messages: none lost, none twice."""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from wasp_worker.backends.simulator import phone_of

from tests.support.processes import ProgramProcess, free_port, http_text
from tests.support.simulated_server import server_counts
from tests.support.worker import CREDENTIAL, start_worker
from wasp.slots import Slot

MESSAGES = 1000


def post(url: str, body: dict[str, object] | None = None) -> int:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **CREDENTIAL}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0  # connection refused or reset: the worker is down


def start(tmp_path: Path, port: int, metrics_port: int = 0) -> ProgramProcess:
    return start_worker(
        tmp_path / "worker.log",
        port,
        tmp_path / "data",
        tmp_path / "config",
        METRICS_PORT=str(metrics_port),
    )


def test_kill_9_while_draining_loses_nothing_and_delivers_each_message_once(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "roles.json").write_text(json.dumps([{"boundSlot": "A1"}, {"boundSlot": "A2"}]))
    (config / "accounts.json").write_text(
        json.dumps([{"slot": "A1", "enabled": True}, {"slot": "A2", "enabled": True}])
    )
    port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}/api/accounts"
    worker = start(tmp_path, port)
    for slot in ("A1", "A2"):
        assert post(f"{base}/{slot}/connect") == 200
        assert post(f"{base}/{slot}/scan") == 200  # logged in: stored auth survives restarts
    to = phone_of(Slot.parse("A2"))

    def send(i: int) -> int:
        return post(f"{base}/A1/send", {"to": to, "text": f"m{i}", "idempotency_key": f"k{i}"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        first = list(pool.map(send, range(MESSAGES // 2)))
    assert set(first) == {202}
    worker.kill()  # SIGKILL while the queue drains
    pending = _queued(tmp_path)
    print(f"at SIGKILL: {pending} of {MESSAGES // 2} accepted still queued")
    assert pending > 0, "the kill must land while the queue drains"

    worker = start(tmp_path, port, metrics_port)
    try:
        # The client does not know what was accepted before the crash: it retries all.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            again = list(pool.map(send, range(MESSAGES)))
        assert again.count(200) == MESSAGES // 2  # already accepted: same message returned
        assert again.count(202) == MESSAGES // 2
        # Sent, and each one's delivered receipt back from A2's device.
        worker.wait_until(lambda: _delivered(tmp_path) == MESSAGES, "all delivered", timeout=120)
        assert "wasp_worker_messages_sent_total" in http_text(
            f"http://127.0.0.1:{metrics_port}/metrics"
        )
    finally:
        worker.stop()

    with sqlite3.connect(tmp_path / "data" / "queue.sqlite3") as queue:
        rows = queue.execute("SELECT state, count(*) FROM outbound GROUP BY state").fetchall()
        keys = queue.execute("SELECT count(DISTINCT idempotency_key) FROM outbound").fetchone()[0]
    assert rows == [("delivered", MESSAGES)]
    assert keys == MESSAGES
    # The simulated server's count: each message reached A2's device exactly once. A send
    # cut by the kill between WhatsApp's acceptance and the queue's commit is repeated
    # with the same message id, which the server deduplicates: reported, never delivered.
    server = server_counts(tmp_path / "data")
    assert len(server.arrivals) == MESSAGES
    assert set(server.arrivals.values()) == {1}
    print(f"sends repeated after the kill (deduplicated by id): {server.repeated_sends}")


def _delivered(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "queue.sqlite3") as queue:
        return int(
            queue.execute("SELECT count(*) FROM outbound WHERE state='delivered'").fetchone()[0]
        )


def _queued(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "queue.sqlite3") as queue:
        return int(
            queue.execute("SELECT count(*) FROM outbound WHERE state='queued'").fetchone()[0]
        )


def test_two_workers_for_one_range_only_one_serves_until_it_dies(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    first_port, second_port = free_port(), free_port()
    first = start(tmp_path, first_port)
    second = start(tmp_path, second_port)  # same WORKDIR, same range: a mistake
    try:
        assert post(f"http://127.0.0.1:{first_port}/api/accounts/A1/connect") == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{second_port}/api/accounts/A2/connect",
            data=b"{}",
            method="POST",
            headers=CREDENTIAL,
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 503
        reason = json.loads(refused.value.read())["error"]
        assert "another worker holds this shard's lease" in reason
        first.kill()
        second.wait_until(
            lambda: post(f"http://127.0.0.1:{second_port}/api/accounts/A2/connect") == 200,
            "second worker takes over",
            timeout=30,
        )
    finally:
        first.stop()
        second.stop()
