"""`python -m bench store`: the shard's store at 1,000,000 messages.

A cached database of realistic shape (`bench.store_data`), a real `wasp worker` on a
copy of it and a real `wasp master` in front: each data API read measured at the
worker, through the master and as plain SQL on the same file (`bench.store_reads`);
the bytes on disk and the write cost the store adds to an inbound message
(`bench.store_write`).

A probe is one entry of `probes()`: adding an endpoint's measurement is one line
there, with the SELECTs that answer it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasp_worker.store import FILE

from bench.store_data import Shape, cached
from bench.store_reads import Probe, measure
from bench.store_write import disk, write_cost
from tests.support.master import start_master
from tests.support.processes import ProgramProcess, free_port
from tests.support.worker import start_worker

BIG = Shape()


@dataclass(frozen=True)
class Facts:
    """Where in the generated data each probe looks."""

    list_slot: str  # the account with the most conversations
    busy_slot: str  # the account of the busiest conversation
    busy_chat: str
    busy_chat_messages: int
    sync_since: int  # a change in the middle of busy_slot's sequence


def facts(database: Path) -> Facts:
    with closing(sqlite3.connect(database)) as db:
        list_slot = db.execute(
            "SELECT slot FROM conversations GROUP BY slot ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        busy_slot, busy_chat, size = db.execute(
            "SELECT slot, chat_id, count(*) c FROM messages GROUP BY slot, chat_id "
            "ORDER BY c DESC LIMIT 1"
        ).fetchone()
        [seqs] = db.execute("SELECT count(*) FROM changes WHERE slot=?", (busy_slot,)).fetchone()
        [since] = db.execute(
            "SELECT seq FROM changes WHERE slot=? ORDER BY seq LIMIT 1 OFFSET ?",
            (busy_slot, seqs // 2),
        ).fetchone()
    return Facts(list_slot, busy_slot, busy_chat, size, since)


_MESSAGE_FIELDS = (
    "wa_message_id, chat_id, direction, sender, push_name, body, media_type, media_url, "
    "timestamp, read, status, sender_phone_jid, sender_lid, from_me, id, message_type, "
    "media_mime, media_size, media_name, edited_at, deleted_at"
)
_CONVERSATION_FIELDS = (
    "chat_id, chat_type, name, last_message_id, last_timestamp, unread, pinned, archived, "
    "muted_until, tags"
)


def probes(f: Facts) -> list[Probe]:
    """Every measured read: one line each (the request, then its floor's SELECTs)."""
    return [
        Probe(
            "conversation list, first page of 50",
            "conversations",
            {"slot": f.list_slot},
            [
                (
                    f"SELECT {_CONVERSATION_FIELDS} FROM conversations WHERE slot=? "
                    "ORDER BY -coalesce(last_timestamp, 0), chat_id LIMIT ? OFFSET ?",
                    (f.list_slot, 51, 0),
                )
            ],
            goal_ms=10,
            query={"limit": "50"},
        ),
        Probe(
            "message page of the busiest chat, 50 (openChat)",
            "openChat",
            {"slot": f.busy_slot},
            [
                (
                    f"SELECT {_MESSAGE_FIELDS} FROM messages WHERE slot=? AND chat_id=? "
                    "ORDER BY timestamp DESC, id DESC LIMIT ?",
                    (f.busy_slot, f.busy_chat, 50),
                )
            ],
            goal_ms=10,
            body={"chat_id": f.busy_chat, "limit": 50},
        ),
        _sync(f, 100),
        _sync(f, 500),
    ]


def _sync(f: Facts, limit: int) -> Probe:
    """A sync page from the middle of the busiest account's sequence."""
    return Probe(
        f"sync page of {limit} changes",
        "sync",
        {"slot": f.busy_slot},
        [
            (
                "SELECT seq, kind, key FROM changes WHERE slot=? AND seq>? ORDER BY seq LIMIT ?",
                (f.busy_slot, f.sync_since, limit),
            ),
            (
                f"SELECT {_MESSAGE_FIELDS} FROM messages WHERE slot=? AND wa_message_id IN "
                "(SELECT key FROM changes WHERE slot=? AND seq>? AND kind='message' "
                "ORDER BY seq LIMIT ?)",
                (f.busy_slot, f.busy_slot, f.sync_since, limit),
            ),
            (
                f"SELECT {_CONVERSATION_FIELDS} FROM conversations WHERE slot=? AND chat_id IN "
                "(SELECT key FROM changes WHERE slot=? AND seq>? AND kind='conversation' "
                "ORDER BY seq LIMIT ?)",
                (f.busy_slot, f.busy_slot, f.sync_since, limit),
            ),
        ],
        goal_ms=10,
        query={"since": str(f.sync_since), "limit": str(limit)},
    )


def start_stack(
    tmp: Path, databases: list[tuple[Path, str, str]], programs: list[ProgramProcess]
) -> tuple[list[int], int]:
    """A worker per (database, first slot, last slot), each on a copy of its database,
    and a local-mode master in front of them; their ports."""
    env = {"PATH": os.environ["PATH"]}
    config = tmp / "config"
    config.mkdir(exist_ok=True)
    ports, shards = [], []
    for n, (database, first, last) in enumerate(databases):
        work = tmp / f"w{n + 1}"
        work.mkdir()
        shutil.copyfile(database, work / FILE)
        port = free_port()
        programs.append(
            start_worker(
                tmp / f"worker-{n + 1}.log",
                port,
                work,
                config,
                base_env=env,
                SHARD_NAME=f"w{n + 1}",
                SLOT_FROM=first,
                SLOT_TO=last,
                WARMUP_LIMIT="0",
            )
        )
        ports.append(port)
        shards.append({"id": f"w{n + 1}", "port": port, "from": first, "to": last})
    master_port = free_port()
    programs.append(
        start_master(
            tmp / "master.log",
            master_port,
            config,
            base_env=env,
            SHARDS_JSON=json.dumps(shards),
        )
    )
    return ports, master_port


def run() -> dict[str, Any]:
    built = cached(BIG)
    found = facts(built.path)
    cache = Path.cwd() / ".cache"
    cache.mkdir(exist_ok=True)
    programs: list[ProgramProcess] = []
    with tempfile.TemporaryDirectory(prefix="wasp-bench-store-", dir=cache) as tmp:
        root = Path(tmp)
        try:
            [worker], master = start_stack(root, [(built.path, "A1", "A50")], programs)
            reads = measure(root / "w1" / FILE, probes(found), {"worker": worker, "master": master})
        finally:
            for program in reversed(programs):
                program.stop()
        copy = root / "w1" / FILE
        writes = write_cost(copy, root / "bare.sqlite3")
        on_disk = disk(built.path)
    return {
        "shape": BIG.__dict__,
        "cache_file": built.path.name,
        "generated_s": built.generated_s,
        "facts": found.__dict__,
        "reads": reads,
        "write": writes,
        "disk": on_disk,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
