"""Nothing in the store is lost on a kill -9: what the worker acknowledged is there after.

A real `wasp worker` (simulator backend) takes inbound messages from the simulated
server (this test plays the accounts of another shard writing to A1: it puts their
messages in the server's mailbox, and the server marks one taken only once the
worker's handler returned, i.e. once it was stored), while the test changes the store
through the API (conversation settings, chats opened and so read, sends that got 202)
and follows `sync`. At a random moment the worker is SIGKILLed with all of that going
on, then started again on the same volume. Counted against the test's own record of
acknowledgements: every acknowledged change is there, and sync goes on from the last
cursor the test had with nothing missed.

A process kill leaves the kernel's page cache to the restarted worker, so it tests
the transaction boundaries (an answer given before its commit), not the fsync.
"""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasp_worker.backends.simulator import ServerLedger, jid_of, lid_of, phone_of

from tests.support.processes import ProgramProcess, free_port
from tests.support.waiting import eventually
from tests.support.worker import CREDENTIAL, start_worker
from wasp.slots import Slot

A1, A2 = Slot.parse("A1"), Slot.parse("A2")
PEERS = [Slot.parse(f"A{n}") for n in range(101, 109)]  # another shard's accounts
PEER_CHATS = [jid_of(peer) for peer in PEERS]
ROUNDS = 3  # kills, each at a random moment, on the same volume


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(status, answer); (0, None) when the worker is not there (refused, reset, cut)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **CREDENTIAL}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())
    except (OSError, ValueError, http.client.HTTPException):
        return 0, None


def inbound(sender: Slot, n: int) -> dict[str, Any]:
    """A text from `sender` to A1, as the simulated server hands it to A1's session."""
    phone = phone_of(sender)
    return {
        "slot": str(A1),
        "from": phone,
        "to": phone_of(A1),
        "body": f"inbound {n}",
        "chat_id": jid_of(sender),
        "chat_type": "direct",
        "sender_jid_raw": jid_of(sender),
        "push_name": f"Peer {sender}",
        "wa_message_id": f"IN{n:08d}",
        "timestamp": time.time(),
        "media_type": None,
        "media_url": None,
        "mime_type": None,
        "file_name": None,
        "file_size": None,
        "from_me": False,
        "sender_lid": lid_of(sender),
        "sender_phone_jid": jid_of(sender),
    }


@dataclass
class Record:
    """The test's own record: what was acknowledged, and what was in flight at the kill."""

    posted: list[str] = field(default_factory=list)  # inbound ids put in the mailbox
    settings: dict[str, int] = field(default_factory=dict)  # chat -> last acknowledged PATCH
    in_flight: dict[str, int] = field(default_factory=dict)  # chat -> PATCH without answer
    read: set[str] = field(default_factory=set)  # inbound ids an acknowledged openChat showed
    sent: list[int] = field(default_factory=list)  # queue ids of sends answered 202
    cursor: str | None = None  # the last sync `next` the test got
    synced_messages: set[str] = field(default_factory=set)
    synced_conversations: set[str] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)  # the writer threads' failures


def patch_body(n: int) -> dict[str, Any]:
    """PATCH number n sets every setting to values only it sets."""
    return {"tags": [f"t{n}"], "pinned": n % 2 == 0, "muted_until": float(n)}


def writers(
    base: str,
    ledger: ServerLedger,
    record: Record,
    stop: threading.Event,
    first: int,
    seed: float,
) -> list[Any]:
    """The threads that keep changing the store until `stop` (or the worker is gone)."""

    def mailbox() -> None:
        n = len(record.posted)
        while not stop.is_set():
            fields = inbound(PEERS[n % len(PEERS)], n)
            ledger.post(A1, fields, "message")
            record.posted.append(fields["wa_message_id"])
            n += 1
            time.sleep(0.004)

    def api() -> None:
        rng = random.Random(seed)
        n = first  # PATCH numbers of different rounds differ
        while not stop.is_set():
            n += 1
            chat = rng.choice(PEER_CHATS)
            action = rng.choice(("patch", "patch", "open", "mark", "send"))
            if action == "patch":
                record.in_flight[chat] = n
                status, _ = call("PATCH", f"{base}/conversations/{chat}", patch_body(n))
                if status == 0:
                    return  # the kill: this one stays in flight
                assert status == 200
                record.settings[chat] = record.in_flight.pop(chat)
            elif action == "open":
                status, answer = call("POST", f"{base}/openChat", {"chat_id": chat, "limit": 500})
                if status == 0:
                    return
                assert status == 200
                shown = [m["wa_message_id"] for m in answer["messages"] if m["direction"] == "in"]
                record.read.update(shown)
            elif action == "mark":
                ids = stored_from(record, PEER_CHATS.index(chat), rng)
                if not ids:
                    continue
                body = {"chat_id": chat, "message_ids": ids}
                status, answer = call("POST", f"{base}/markRead", body)
                if status == 0:
                    return
                assert status == 200, answer
                record.read.update(ids)
            else:
                to = {"to": phone_of(A2), "text": f"out {n}", "idempotency_key": f"k{n}"}
                status, answer = call("POST", f"{base}/send", to)
                if status == 0:
                    return
                assert status == 202
                record.sent.append(answer["message"]["id"])

    def sync() -> None:
        while not stop.is_set():
            if not follow(base, record, limit=50):
                return
            time.sleep(0.02)

    def guarded(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as error:  # a thread's failure is the test's
                record.errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(t), daemon=True) for t in (mailbox, api, sync)]
    for thread in threads:
        thread.start()
    return threads


def stored_from(record: Record, peer: int, rng: random.Random) -> list[str]:
    """A few of this peer's inbound messages that sync already showed (so stored)."""
    ids = sorted(
        i
        for i in list(record.synced_messages)
        if i.startswith("IN") and int(i[2:]) % len(PEERS) == peer
    )
    return rng.sample(ids, min(5, len(ids)))


def follow(base: str, record: Record, limit: int) -> bool:
    """Sync pages from the record's cursor until the last; False when the worker is gone."""
    while True:
        since = f"&since={record.cursor}" if record.cursor is not None else ""
        status, page = call("GET", f"{base}/sync?limit={limit}{since}")
        if status == 0:
            return False
        assert status == 200, page
        record.synced_messages.update(m["wa_message_id"] for m in page["messages"])
        record.synced_conversations.update(c["chat_id"] for c in page["conversations"])
        record.cursor = page["next"]
        if not page["has_more"]:
            return True


def everything(base: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every message and conversation, at their current state, by a full sync from the start."""
    messages: dict[str, dict[str, Any]] = {}
    chats: dict[str, dict[str, Any]] = {}
    since = ""
    while True:
        status, page = call("GET", f"{base}/sync?limit=1000{since}")
        assert status == 200, page
        messages.update((m["wa_message_id"], m) for m in page["messages"])
        chats.update((c["chat_id"], c) for c in page["conversations"])
        since = f"&since={page['next']}"
        if not page["has_more"]:
            return messages, chats


def conversations(base: str) -> list[dict[str, Any]]:
    status, answer = call("GET", f"{base}/conversations?limit=500")
    assert status == 200, answer
    return list(answer["items"])


def taken(ledger_dir: Path) -> set[str]:
    """Inbound ids the simulated server saw the worker take (after storing them)."""
    with closing(sqlite3.connect(ledger_dir / ServerLedger.FILE, timeout=10)) as db:
        rows = db.execute(
            "SELECT fields FROM mailbox WHERE kind='message' AND taken=1 AND recipient='A1'"
        ).fetchall()
    return {json.loads(fields)["wa_message_id"] for (fields,) in rows}


def waiting(ledger_dir: Path) -> int:
    with closing(sqlite3.connect(ledger_dir / ServerLedger.FILE, timeout=10)) as db:
        return int(
            db.execute("SELECT count(*) FROM mailbox WHERE kind='message' AND taken=0").fetchone()[
                0
            ]
        )


def start(tmp_path: Path, port: int) -> ProgramProcess:
    return start_worker(tmp_path / "worker.log", port, tmp_path / "data", tmp_path / "config")


def test_a_kill_9_loses_nothing_the_worker_acknowledged_and_sync_goes_on_without_a_gap(
    tmp_path: Path,
) -> None:
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    config = tmp_path / "config"
    config.mkdir()
    bound = [{"boundSlot": "A1"}, {"boundSlot": "A2"}]  # both connect again after the restart
    (config / "roles.json").write_text(json.dumps(bound))
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/accounts/A1"
    worker = start(tmp_path, port)
    ledger = ServerLedger(data)
    record = Record()
    try:
        for slot in ("A1", "A2"):
            assert call("POST", f"http://127.0.0.1:{port}/api/accounts/{slot}/connect")[0] == 200
            assert call("POST", f"http://127.0.0.1:{port}/api/accounts/{slot}/scan")[0] == 200
        for n, peer in enumerate(PEERS):  # every peer's chat exists before the writers start
            ledger.post(A1, inbound(peer, 1_000_000 + n), "message")
        eventually(lambda: len(conversations(base)) == len(PEERS), "every chat", timeout=30)

        acknowledged: set[str] = set()
        for round_ in range(ROUNDS):
            worker, taken_now = kill_while_writing(tmp_path, worker, port, record, rng, round_)
            acknowledged |= taken_now
            check(base, data, record, acknowledged)
    finally:
        worker.stop()
        ledger.close()


def kill_while_writing(
    tmp_path: Path,
    worker: ProgramProcess,
    port: int,
    record: Record,
    rng: random.Random,
    round_: int,
) -> tuple[ProgramProcess, set[str]]:
    """Start the writers, SIGKILL the worker at a random moment, start it again; the
    inbound messages the server saw it take before the kill."""
    base, data = f"http://127.0.0.1:{port}/api/accounts/A1", tmp_path / "data"
    ledger = ServerLedger(data)
    stop = threading.Event()
    threads = writers(base, ledger, record, stop, first=round_ * 100_000, seed=rng.random())
    time.sleep(rng.uniform(1.0, 3.0))
    worker.kill()  # SIGKILL, while every writer is going
    acknowledged = taken(data)  # the server's record, read once the worker is dead
    stop.set()
    for thread in threads:
        thread.join(10)
    ledger.close()
    assert record.errors == []
    print(
        f"round {round_}, at the kill: {len(acknowledged)} inbound taken of "
        f"{len(record.posted)} posted, {len(record.settings)} chats patched, "
        f"{len(record.read)} messages read, {len(record.sent)} sends accepted, "
        f"sync at {record.cursor}"
    )
    assert record.sent
    assert record.settings
    assert record.read
    assert record.cursor
    return start(tmp_path, port), acknowledged


def check(base: str, data: Path, record: Record, acknowledged: set[str]) -> None:
    """Everything acknowledged is there, and sync from the saved cursor has no gap."""
    eventually(lambda: not waiting(data), "the worker takes what waited", timeout=60)
    messages, chats = everything(base)
    # Each acknowledged inbound message is stored, and in the end every posted one.
    assert acknowledged - set(messages) == set()
    assert set(record.posted) - set(messages) == set()
    # Each chat's settings are those of its last acknowledged PATCH, or of the one the
    # kill cut (it may have committed without the test hearing).
    for chat in PEER_CHATS:
        allowed = [record.settings.get(chat), record.in_flight.get(chat)]
        shapes = [
            patch_body(n) if n is not None else {"tags": [], "pinned": False, "muted_until": None}
            for n in allowed
        ]
        actual = {k: chats[chat][k] for k in ("tags", "pinned", "muted_until")}
        assert actual in shapes, (chat, actual, allowed)
    # Each conversation's unread count is its messages' (both written in one transaction).
    for chat_id, conversation in chats.items():
        unread = [
            m
            for m in messages.values()
            if m["chat_id"] == chat_id and m["direction"] == "in" and not m["read"]
        ]
        assert conversation["unread"] == len(unread), chat_id
    # What an acknowledged openChat showed, or markRead named, is read.
    assert sorted(i for i in record.read if not messages[i]["read"]) == []
    # Every send that got 202 is in the queue.
    for row in record.sent:
        status, answer = call("GET", f"{base}/messages/{row}")
        assert status == 200, (row, answer)
    # Sync from the cursor the test last had: together with what it saw before the
    # kill, every message and conversation that exists now (nothing skipped).
    assert follow(base, record, limit=50)
    assert set(messages) - record.synced_messages == set()
    assert set(chats) - record.synced_conversations == set()
