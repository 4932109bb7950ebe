"""Version 8 of the shard's database: stable ids, the full-text index and contacts,
brought to a volume that a version 7 worker wrote."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from wasp_worker.db import migrate
from wasp_worker.history import MARK_CHAT_READ
from wasp_worker.queue import SCHEMA as QUEUE_V0
from wasp_worker.store import ShardStore, migrations

ROWS = [
    ("A1", "M1", "111@s.whatsapp.net", "in", "111", "Ana", "olá café amanhã", None, 10.0),
    ("A1", "M2", "9@g.us", "in", "333", "Carla", "", "image", 30.0),
    ("A1", "M3", "111@s.whatsapp.net", "out", "me", None, "see you tomorrow", None, 20.0),
    ("A2", "M4", "9@g.us", "in", "444", "Dan", "cafe later", None, 40.0),
]


def _version_7(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(QUEUE_V0)
        migrate(db, migrations(path.parent)[:6])
        db.executemany(
            "INSERT INTO messages (slot, wa_message_id, chat_id, direction, sender, push_name, "
            "body, media_type, timestamp, sender_phone_jid) VALUES (?,?,?,?,?,?,?,?,?,"
            "CASE WHEN ?4='in' THEN ?5 || '@s.whatsapp.net' END)",
            ROWS,
        )
        migrate(db, migrations(path.parent)[:7])


def test_version_8_keeps_every_message_in_order_and_indexes_their_text(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    _version_7(path)
    ShardStore(path).close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(migrations(tmp_path))
        kept = db.execute(
            "SELECT id, wa_message_id, body, message_type FROM messages ORDER BY id"
        ).fetchall()
        # Ids are time-ordered: the timestamp's millisecond times 4096 (plus the number in
        # that millisecond, here 0).
        assert kept == [
            (10_000 * 4096, "M1", "olá café amanhã", "text"),
            (20_000 * 4096, "M3", "see you tomorrow", "text"),
            (30_000 * 4096, "M2", "", "image"),
            (40_000 * 4096, "M4", "cafe later", "text"),
        ]
        # Diacritics folded: "cafe" finds "café".
        found = db.execute(
            "SELECT m.wa_message_id FROM messages_fts f JOIN messages m ON m.id = f.rowid "
            "WHERE messages_fts MATCH 'cafe' ORDER BY m.timestamp"
        ).fetchall()
        assert found == [("M1",), ("M4",)]
        contacts = db.execute(
            "SELECT slot, jid, phone_jid, push_name FROM contacts ORDER BY slot, jid"
        ).fetchall()
        assert contacts == [
            ("A1", "111@s.whatsapp.net", "111@s.whatsapp.net", "Ana"),
            ("A1", "333@s.whatsapp.net", "333@s.whatsapp.net", "Carla"),
            ("A2", "444@s.whatsapp.net", "444@s.whatsapp.net", "Dan"),
        ]
        conversation_ids = db.execute(
            "SELECT id, chat_id FROM conversations WHERE slot='A1' ORDER BY id"
        ).fetchall()
        assert [chat for _, chat in conversation_ids] == ["111@s.whatsapp.net", "9@g.us"]


def test_the_index_follows_edits_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    _version_7(path)
    ShardStore(path).close()
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("UPDATE messages SET body='bolo' WHERE wa_message_id='M1'")
        db.execute("DELETE FROM messages WHERE wa_message_id='M4'")

        def matching(term: str) -> list[str]:
            return [
                row[0]
                for row in db.execute(
                    "SELECT m.wa_message_id FROM messages_fts f JOIN messages m "
                    "ON m.id = f.rowid WHERE messages_fts MATCH ? ORDER BY m.id",
                    (term,),
                )
            ]

        assert matching("cafe") == []
        assert matching("bolo") == ["M1"]
        # Raises when the index and the table disagree.
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


def test_the_copy_numbers_the_messages_of_a_millisecond_in_time_order(tmp_path: Path) -> None:
    """The oracle: the rows by (timestamp, order stored), numbered 0, 1, ... within each
    whole millisecond (the copy knows every message, so it orders them by exact time)."""
    path = tmp_path / "queue.sqlite3"
    stamps = [5.0, 1.0, 5.0004, 5.0, 1.0009]  # M1..M5; three share the 5000th ms
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(QUEUE_V0)
        migrate(db, migrations(path.parent)[:6])
        db.executemany(
            "INSERT INTO messages (slot, wa_message_id, chat_id, direction, sender, timestamp) "
            "VALUES ('A1', ?, '1@s.whatsapp.net', 'in', '1', ?)",
            [(f"M{n + 1}", stamp) for n, stamp in enumerate(stamps)],
        )
        migrate(db, migrations(path.parent)[:7])
    ShardStore(path).close()
    with closing(sqlite3.connect(path)) as db:
        ids = dict(db.execute("SELECT wa_message_id, id FROM messages").fetchall())
    assert ids == {
        "M2": 1000 * 4096,
        "M5": 1000 * 4096 + 1,
        "M1": 5000 * 4096,
        "M4": 5000 * 4096 + 1,
        "M3": 5000 * 4096 + 2,
    }


def test_opening_a_chat_marks_it_read_through_the_unread_index(tmp_path: Path) -> None:
    """Through the partial index of unread inbound messages, not a scan of the chat."""
    path = tmp_path / "queue.sqlite3"
    ShardStore(path).close()
    with closing(sqlite3.connect(path)) as db:
        plan = db.execute(
            f"EXPLAIN QUERY PLAN {MARK_CHAT_READ}", ("A1", "1@s.whatsapp.net")
        ).fetchall()
    assert any("messages_unread" in row[-1] for row in plan), plan
