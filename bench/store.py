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
from functools import partial
from pathlib import Path
from typing import Any, cast

from wasp_worker.store import FILE

from bench.store_alternatives import compare
from bench.store_data import Shape, cached
from bench.store_reads import Probe, Statement, measure
from bench.store_write import disk, write_cost
from tests.support.master import start_master
from tests.support.processes import ProgramProcess, free_port
from tests.support.worker import start_worker
from wasp import data_api

BIG = Shape()
# The view across shards: SHARDS workers, each on a database of its own range's accounts.
SHARDS = 10
SMALL = 100_000


@dataclass(frozen=True)
class Facts:
    """Where in the generated data each probe looks."""

    list_slot: str  # the account with the most conversations
    heavy_slot: str  # the account with the most messages
    busy_slot: str  # the account of the busiest conversation
    busy_chat: str
    busy_chat_messages: int
    middle_cursor: str  # the busiest chat's middle message, as a `before` cursor
    sync_since: int  # a change in the middle of busy_slot's sequence
    terms: dict[str, int]  # search text -> messages that have every word


def facts(database: Path) -> Facts:
    with closing(sqlite3.connect(database)) as db:
        list_slot = db.execute(
            "SELECT slot FROM conversations GROUP BY slot ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        heavy_slot = db.execute(
            "SELECT slot FROM messages GROUP BY slot ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        busy_slot, busy_chat, size = db.execute(
            "SELECT slot, chat_id, count(*) c FROM messages GROUP BY slot, chat_id "
            "ORDER BY c DESC LIMIT 1"
        ).fetchone()
        middle = db.execute(
            "SELECT timestamp, slot, id FROM messages WHERE slot=? AND chat_id=? "
            "ORDER BY timestamp, id LIMIT 1 OFFSET ?",
            (busy_slot, busy_chat, size // 2),
        ).fetchone()
        [seqs] = db.execute("SELECT count(*) FROM changes WHERE slot=?", (busy_slot,)).fetchone()
        [since] = db.execute(
            "SELECT seq FROM changes WHERE slot=? ORDER BY seq LIMIT 1 OFFSET ?",
            (busy_slot, seqs // 2),
        ).fetchone()
        terms = search_terms(db)
    return Facts(
        list_slot,
        heavy_slot,
        busy_slot,
        busy_chat,
        size,
        data_api.encode(tuple(middle), "chat"),
        since,
        terms,
    )


def search_terms(
    db: sqlite3.Connection, targets: tuple[int, ...] = (100_000, 3_000, 30)
) -> dict[str, int]:
    """Words of very different frequency (by default about 100,000, 3,000 and 30
    messages, from the index's own vocabulary), and two common words together."""
    db.execute("CREATE VIRTUAL TABLE temp.vocabulary USING fts5vocab(main, messages_fts, 'row')")
    chosen: dict[str, int] = {}
    for target in targets:
        term, docs = db.execute(
            "SELECT term, doc FROM temp.vocabulary WHERE length(term) >= 4 "
            "ORDER BY abs(doc - ?) LIMIT 1",
            (target,),
        ).fetchone()
        chosen[term] = docs
    chosen["pedido entrega"] = db.execute(
        "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'pedido AND entrega'"
    ).fetchone()[0]
    return chosen


_MESSAGE_FIELDS = (
    "m.wa_message_id, m.chat_id, m.direction, m.sender, m.push_name, m.body, m.media_type, "
    "m.media_url, m.timestamp, m.read, m.status, m.sender_phone_jid, m.sender_lid, "
    "m.from_me, m.id, m.message_type, m.media_mime, m.media_size, m.media_name, "
    "m.edited_at, m.deleted_at, m.quoted_id, m.payload, m.slot"
)
_SLOT_COLUMN = _MESSAGE_FIELDS.count(",")  # m.slot, the last of the fields
# The worker's second statement of every message read: the page's reactions, all slots at
# once (`reactions.decorate`).
_REACTIONS = (
    "SELECT slot, wa_message_id, reactor, emoji, from_me FROM reactions "
    "WHERE slot IN ({slots}) AND wa_message_id IN ({ids}) ORDER BY timestamp, reactor"
)
# The slots of a range that have conversations, as the worker finds them for a range read
# (a skip scan of the slot index).
_SLOTS_PRESENT = (
    "WITH RECURSIVE s(slot) AS (SELECT min(slot) FROM conversations UNION ALL "
    "SELECT (SELECT min(slot) FROM conversations WHERE slot > s.slot) FROM s "
    "WHERE s.slot IS NOT NULL) SELECT slot FROM s WHERE slot IS NOT NULL"
)
_CONVERSATION_FIELDS = (
    "chat_id, chat_type, name, last_message_id, last_timestamp, unread, pinned, archived, "
    "muted_until, tags, id, slot"
)
# The worker's search SELECT, first page (20 and one to know more follow), in any order:
# FTS5 the outer loop, as the worker reads it.
_SEARCH_IN = (
    f"SELECT {_MESSAGE_FIELDS}, snippet(messages_fts, 0, '[', ']', '…', 12) FROM messages_fts "
    "CROSS JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH ? {where}"
    "AND m.deleted_at IS NULL ORDER BY {order} LIMIT 21"
)
# The worker's order: message ids follow time, so FTS5's rowid order is newest first.
BY_ID = "messages_fts.rowid DESC"
_SEARCH = _SEARCH_IN.replace("{order}", BY_ID)
ALL = [f"A{n}" for n in range(BIG.first_slot, BIG.first_slot + BIG.accounts)]


def _in(slots: list[str]) -> str:
    """The worker's condition for the slots a search covers."""
    return f"AND m.slot IN ({','.join('?' * len(slots))}) "


def with_reactions(db: sqlite3.Connection, floor: list[Statement], page: int) -> list[Statement]:
    """A message read's statements and then the one the worker runs after them: the
    reactions of the messages it answers (the first `page` rows of the first statement
    that reads messages), found by running that statement once here."""
    [(sql, args)] = [(sql, args) for sql, args in floor if _MESSAGE_FIELDS in sql][:1]
    rows = db.execute(sql, args).fetchall()[:page]
    slots = sorted({row[_SLOT_COLUMN] for row in rows})
    ids = sorted({row[0] for row in rows})
    marks = ",".join("?" * len(ids))
    wanted = _REACTIONS.format(slots=",".join("?" * len(slots)), ids=marks)
    return [*floor, (wanted, (*slots, *ids))]


def probes(f: Facts, db: sqlite3.Connection) -> list[Probe]:
    """Every measured read: one entry each (the request, then its floor's SELECTs)."""
    return [
        Probe(
            "conversation list, first page of 50",
            "conversations",
            {"slot": f.list_slot},
            [
                (
                    f"SELECT {_CONVERSATION_FIELDS} FROM conversations WHERE slot=? "
                    "ORDER BY last_timestamp DESC, id DESC LIMIT 51",
                    (f.list_slot,),
                )
            ],
            goal_ms=10,
            query={"limit": "50"},
        ),
        _messages(f, db, "newest", {}),
        _messages(f, db, "from the middle", {"before": f.middle_cursor}),
        _sync(f, db, 100),
        _sync(f, db, 500),
        *(_search(f, db, text, docs) for text, docs in f.terms.items()),
        Probe(
            "unread summary of one account (totals, first 50 chats)",
            "unread",
            {"slot": f.list_slot},
            [
                (_UNREAD_TOTALS.format(where="WHERE slot IN (?) AND"), (*_NOW, f.list_slot)),
                (
                    f"SELECT {_CONVERSATION_FIELDS} FROM conversations WHERE slot=? "
                    "AND unread > 0 ORDER BY last_timestamp DESC, id DESC LIMIT 51",
                    (f.list_slot,),
                ),
            ],
            goal_ms=10,
            query={"limit": "50"},
        ),
        _unread_all("dataUnread"),
        _unread_all("/api/unread"),
        *(_search_all(db, text, docs, "dataSearch") for text, docs in list(f.terms.items())[1:3]),
        *(_search_all(db, text, docs, "/api/search") for text, docs in list(f.terms.items())[1:3]),
    ]


# The worker's unread totals: one GROUP BY of the unread conversations (muted until
# after now, or archived: counted apart).
_APART = "(archived OR coalesce(muted_until > ?, 0))"
_UNREAD_TOTALS = (
    f"SELECT slot, sum(CASE WHEN {_APART} THEN 0 ELSE unread END), sum(NOT {_APART}), "
    f"sum(CASE WHEN {_APART} THEN unread ELSE 0 END), sum({_APART}) FROM conversations "
    "INDEXED BY conversations_unread_slot {where} unread > 0 GROUP BY slot"
)
_NOW = (1.8e9,) * 4  # a fixed "now" for the floor: the same work as any other


def _unread_all(operation: str) -> Probe:
    """The shard's 50 accounts' unread summary: the worker's range read (`dataUnread`), or
    the master's view across shards (`/api/unread`, here of one shard). The floor: the
    range's slots, the totals' GROUP BY (a walk of the unread conversations' index) and the
    first page of unread chats of the 50 (their keys from the other unread index, read
    backwards; then their rows by id)."""
    where = "worker, /data/unread" if operation == "dataUnread" else "master, /api/unread"
    return Probe(
        f"unread summary of the shard's 50 accounts ({where}; totals, first 50 chats)",
        operation,
        {},
        [
            (_SLOTS_PRESENT, ()),
            (_UNREAD_TOTALS.format(where="WHERE"), _NOW),
            (
                f"SELECT {_CONVERSATION_FIELDS} FROM conversations WHERE id IN (SELECT id FROM "
                "(SELECT coalesce(last_timestamp, 0), slot, id FROM conversations "
                "INDEXED BY conversations_unread_last "
                f"WHERE unread > 0 AND slot IN ({','.join('?' * len(ALL))}) "
                "ORDER BY last_timestamp DESC, slot DESC, id DESC LIMIT 51))",
                tuple(ALL),
            ),
        ],
        goal_ms=10,
        query={"limit": "50"},
        at=("worker",) if operation == "dataUnread" else ("master",),
    )


def _messages(f: Facts, db: sqlite3.Connection, where: str, query: dict[str, str]) -> Probe:
    """A page of 50 of the busiest chat, newest first (from `before`, if given)."""
    bound, args = "", cast(tuple[Any, ...], ())
    if "before" in query:
        stamp, _, row = data_api.decode(query["before"], "chat")
        bound, args = "AND (m.timestamp, m.id) < (?, ?) ", (stamp, row)
    return Probe(
        f"message page of 50, busiest chat ({f.busy_chat_messages:,} messages), {where}",
        "messages",
        {"slot": f.busy_slot, "chat_id": f.busy_chat},
        with_reactions(
            db,
            [
                (
                    f"SELECT {_MESSAGE_FIELDS} FROM messages m WHERE m.slot=? AND m.chat_id=? "
                    f"{bound}ORDER BY m.timestamp DESC, m.id DESC LIMIT 51",
                    (f.busy_slot, f.busy_chat, *args),
                )
            ],
            50,
        ),
        goal_ms=10,
        query={"limit": "50", **query},
    )


def _fts(text: str) -> str:
    """The FTS5 query the worker makes of a search text (each word quoted, the last a
    prefix), written out again here."""
    quoted = [f'"{word}"' for word in text.split()]
    return " AND ".join([*quoted[:-1], quoted[-1] + " *"])


def _search(f: Facts, db: sqlite3.Connection, text: str, docs: int) -> Probe:
    """One account's search, first page (20)."""
    return Probe(
        f"search one account, {text!r} ({docs:,} messages in the shard)",
        "search",
        {"slot": f.heavy_slot},
        with_reactions(
            db, [(_SEARCH.format(where="AND m.slot=? "), (_fts(text), f.heavy_slot))], 20
        ),
        goal_ms=25,
        query={"q": text},
    )


def _search_all(db: sqlite3.Connection, text: str, docs: int, operation: str) -> Probe:
    """The shard's 50 accounts searched at once: the worker's range read (`dataSearch`),
    or the master's view across shards (`/api/search`, here of one shard): the range's
    slots that have conversations, the search, the hits' reactions."""
    where = "worker, /data/search" if operation == "dataSearch" else "master, /api/search"
    return Probe(
        f"search all 50 accounts ({where}), {text!r} ({docs:,} messages)",
        operation,
        {},
        with_reactions(
            db,
            [(_SLOTS_PRESENT, ()), (_SEARCH.format(where=_in(ALL)), (_fts(text), *ALL))],
            20,
        ),
        goal_ms=25,
        query={"q": text},
        at=("worker",) if operation == "dataSearch" else ("master",),
    )


def _sync(f: Facts, db: sqlite3.Connection, limit: int) -> Probe:
    """A sync page from the middle of the busiest account's sequence: its changes, whether
    more follow, the messages and conversations they name, the messages' reactions."""
    # An incremental client's page: the slot's horizon checked, then only the changes the
    # compaction did not carry (the partial index `changes_incremental`).
    [last] = db.execute(
        "SELECT max(seq) FROM (SELECT seq FROM changes WHERE slot=? AND seq>? "
        "AND carried = 0 ORDER BY seq LIMIT ?)",
        (f.busy_slot, f.sync_since, limit),
    ).fetchone()
    page = [
        ("SELECT seq FROM sync_horizon WHERE slot=?", (f.busy_slot,)),
        (
            "SELECT seq, kind, key FROM changes WHERE slot=? AND seq>? AND carried = 0 "
            "ORDER BY seq LIMIT ?",
            (f.busy_slot, f.sync_since, limit),
        ),
        (
            "SELECT 1 FROM changes WHERE slot=? AND seq>? AND carried = 0 LIMIT 1",
            (f.busy_slot, last),
        ),
        (
            f"SELECT {_MESSAGE_FIELDS} FROM messages m WHERE m.slot=? AND m.wa_message_id IN "
            "(SELECT key FROM changes WHERE slot=? AND seq>? AND carried = 0 "
            "AND kind='message' ORDER BY seq LIMIT ?)",
            (f.busy_slot, f.busy_slot, f.sync_since, limit),
        ),
        (
            f"SELECT {_CONVERSATION_FIELDS} FROM conversations WHERE slot=? AND chat_id IN "
            "(SELECT key FROM changes WHERE slot=? AND seq>? AND carried = 0 "
            "AND kind='conversation' ORDER BY seq LIMIT ?)",
            (f.busy_slot, f.busy_slot, f.sync_since, limit),
        ),
    ]
    return Probe(
        f"sync page of {limit} changes",
        "sync",
        {"slot": f.busy_slot},
        with_reactions(db, page, limit),
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
    for program in programs:
        # The sync log's first compaction pass walks the whole log at start: measured
        # reads begin after it.
        program.wait_until(partial(_compacted, program), "first compaction", 300)
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


def _compacted(program: ProgramProcess) -> bool:
    return "sync_compaction_pass" in program.output()


def across_shards(root: Path) -> dict[str, Any]:
    """`/api/search` of the master over SHARDS workers, each on its own database of SMALL
    messages (its range's 50 accounts), newest hits first across all 500 accounts."""
    shapes = [
        Shape(messages=SMALL, conversations=2_000, first_slot=n * 50 + 1) for n in range(SHARDS)
    ]
    built = [cached(shape) for shape in shapes]
    generated = sum(b.generated_s or 0 for b in built)
    from_cache = all(b.from_cache for b in built)
    with closing(sqlite3.connect(built[0].path)) as db:
        terms = search_terms(db, (10_000, 300, 3))
        first = [f"A{n}" for n in range(1, 51)]  # the first shard's accounts
        floors = {
            text: with_reactions(
                db,
                [(_SLOTS_PRESENT, ()), (_SEARCH.format(where=_in(first)), (_fts(text), *first))],
                20,
            )
            for text in terms
        }
    databases = [
        (b.path, f"A{shape.first_slot}", f"A{shape.first_slot + 49}")
        for b, shape in zip(built, shapes, strict=True)
    ]
    programs: list[ProgramProcess] = []
    try:
        _, master = start_stack(root, databases, programs)
        found = measure(
            root / "w1" / FILE,
            [
                Probe(
                    f"search {SHARDS} shards, {text!r} ({docs:,} messages in the first shard)",
                    "/api/search",
                    {},
                    floors[text],
                    goal_ms=100,
                    query={"q": text},
                    at=("master",),
                )
                for text, docs in terms.items()
            ],
            {"master": master},
        )
    finally:
        for program in reversed(programs):
            program.stop()
    return {
        "shards": SHARDS,
        "messages_each": SMALL,
        "generated_s": round(generated, 1),
        "from_cache": from_cache,
        "reads": found,
    }


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
            with closing(sqlite3.connect(f"file:{built.path}?mode=ro", uri=True)) as db:
                measured = probes(found, db)
            reads = measure(root / "w1" / FILE, measured, {"worker": worker, "master": master})
        finally:
            for program in reversed(programs):
                program.stop()
        copy = root / "w1" / FILE
        common = next(iter(found.terms))
        alternatives = compare(
            copy,
            _SEARCH_IN,
            found.heavy_slot,
            ALL,
            _fts(common),
            (found.busy_slot, found.busy_chat),
        )
        writes = write_cost(copy, root / "bare.sqlite3")
        on_disk = disk(built.path)
        (root / "w1").rename(root / "big")  # the view across shards starts its own w1..
        shards = across_shards(root)
    return {
        "shape": BIG.__dict__,
        "cache_file": built.path.name,
        "generated_s": built.generated_s,
        "from_cache": built.from_cache,
        "facts": found.__dict__,
        "reads": reads,
        "alternatives": alternatives,
        "common_word": common,
        "write": writes,
        "disk": on_disk,
        "across_shards": shards,
        "load_at_end": round(os.getloadavg()[0], 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
