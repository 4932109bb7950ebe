"""Version 8 of the shard's database: what the data API stands on.

- `messages` is rebuilt with an `id INTEGER PRIMARY KEY`: a row's number never
  changes (a rowid that is no declared column may be renumbered by VACUUM), so
  cursors and the full-text index can name rows by it. It is time-ordered
  (`wasp_worker.message_ids`), not a counter: the copy numbers the rows in
  (timestamp, rowid) order, each write after through `history.insert`'s row. New columns:
  `message_type` (text, image, video, audio, document, sticker, ...), the
  media's `media_mime`, `media_size`, `media_name`, and `edited_at` and
  `deleted_at` (a message deleted for everyone stays as a tombstone: its body
  and media are cleared, its id and place in the chat kept).
- `conversations` is rebuilt with an `id` the same way (a stable tie-break for
  keyset cursors).
- `messages_fts`: an FTS5 index of the bodies (external content: the text is
  stored once, in `messages`), kept by triggers in every write's transaction.
- `contacts`: per slot, a person by their phone JID (else LID), with both
  identities, the name saved on the phone and the push name they chose;
  back-filled from the senders of stored messages.
"""

from __future__ import annotations

import sqlite3

from wasp_worker import message_ids

MESSAGES = """
CREATE TABLE messages_v8 (
  id INTEGER PRIMARY KEY,
  slot TEXT NOT NULL,
  wa_message_id TEXT NOT NULL,
  chat_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
  sender TEXT NOT NULL,
  push_name TEXT,
  body TEXT NOT NULL DEFAULT '',
  media_type TEXT,
  media_url TEXT,
  timestamp REAL NOT NULL,
  read INTEGER NOT NULL DEFAULT 0,
  status TEXT,
  sender_jid TEXT,
  sender_phone_jid TEXT,
  sender_lid TEXT,
  from_me INTEGER NOT NULL DEFAULT 0,
  message_type TEXT NOT NULL DEFAULT 'text',
  media_mime TEXT,
  media_size INTEGER,
  media_name TEXT,
  edited_at REAL,
  deleted_at REAL,
  UNIQUE (slot, wa_message_id)
)
"""
# The columns the rebuild copies (every column of version 7's table).
_V7_COLUMNS = (
    "slot, wa_message_id, chat_id, direction, sender, push_name, body, media_type, media_url, "
    "timestamp, read, status, sender_jid, sender_phone_jid, sender_lid, from_me"
)
CONVERSATIONS = """
CREATE TABLE conversations_v8 (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  slot TEXT NOT NULL,
  chat_id TEXT NOT NULL,
  chat_type TEXT NOT NULL CHECK (chat_type IN ('direct', 'group')),
  name TEXT,
  last_message_id TEXT,
  last_timestamp REAL,
  unread INTEGER NOT NULL DEFAULT 0,
  pinned INTEGER NOT NULL DEFAULT 0,
  archived INTEGER NOT NULL DEFAULT 0,
  muted_until REAL,
  tags TEXT NOT NULL DEFAULT '[]',
  UNIQUE (slot, chat_id)
)
"""
_CONVERSATION_COLUMNS = (
    "slot, chat_id, chat_type, name, last_message_id, last_timestamp, unread, pinned, "
    "archived, muted_until, tags"
)
CONTACTS = """
CREATE TABLE contacts (
  slot TEXT NOT NULL,
  jid TEXT NOT NULL,
  phone_jid TEXT,
  lid TEXT,
  name TEXT,
  push_name TEXT,
  updated_at REAL NOT NULL,
  PRIMARY KEY (slot, jid)
)
"""
# Each statement its own string: a trigger's body has semicolons of its own.
STATEMENTS = (
    "CREATE INDEX messages_chat ON messages (slot, chat_id, timestamp, id)",
    "CREATE INDEX messages_unread ON messages (slot, chat_id) WHERE direction='in' AND read=0",
    "CREATE INDEX conversations_last ON conversations (slot, last_timestamp, id)",
    "CREATE INDEX contacts_lid ON contacts (slot, lid)",
    "CREATE INDEX contacts_phone ON contacts (slot, phone_jid)",
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "body, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body); "
    "END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body); "
    "INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body); END",
)


def migrate(db: sqlite3.Connection) -> None:
    """Version 7 → 8, inside the migration's transaction."""
    db.execute(MESSAGES)
    # Read and written in one stream: the old table's rows in time order, each given its id.
    ordered = db.execute("SELECT timestamp, rowid FROM messages ORDER BY timestamp, rowid")
    db.executemany(
        f"INSERT INTO messages_v8 (id, {_V7_COLUMNS}, message_type) "
        f"SELECT ?, {_V7_COLUMNS}, coalesce(media_type, 'text') FROM messages WHERE rowid=?",
        message_ids.in_time_order(ordered),
    )
    db.execute("DROP TABLE messages")
    db.execute("ALTER TABLE messages_v8 RENAME TO messages")
    db.execute(CONVERSATIONS)
    db.execute(
        f"INSERT INTO conversations_v8 ({_CONVERSATION_COLUMNS}) "
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations ORDER BY rowid"
    )
    db.execute("DROP TABLE conversations")
    db.execute("ALTER TABLE conversations_v8 RENAME TO conversations")
    db.execute(CONTACTS)
    for statement in STATEMENTS:
        db.execute(statement)
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    # Everyone who wrote to the slot, by their phone JID where known, with the newest
    # push name they sent.
    db.execute(
        "INSERT INTO contacts (slot, jid, phone_jid, lid, push_name, updated_at) "
        "SELECT slot, coalesce(sender_phone_jid, sender_lid, sender_jid), "
        "max(sender_phone_jid), max(sender_lid), NULL, max(timestamp) FROM messages "
        "WHERE direction='in' AND coalesce(sender_phone_jid, sender_lid, sender_jid) IS NOT NULL "
        "GROUP BY slot, coalesce(sender_phone_jid, sender_lid, sender_jid)"
    )
    db.execute(
        "UPDATE contacts SET push_name = (SELECT m.push_name FROM messages m "
        "WHERE m.slot=contacts.slot AND m.direction='in' AND m.push_name IS NOT NULL "
        "AND coalesce(m.sender_phone_jid, m.sender_lid, m.sender_jid)=contacts.jid "
        "ORDER BY m.timestamp DESC, m.id DESC LIMIT 1)"
    )
