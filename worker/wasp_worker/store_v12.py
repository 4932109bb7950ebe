"""The shard database's step that keeps chat settings for WhatsApp: `chat_settings_set`.

One row per (slot, chat, field) that the API set (`pinned`, `archived`, `muted_until`):
its latest value and when it was set. `sent` 0: WhatsApp does not have it yet (the
session was not connected, or a send failed and is retried; `attempts` counts the
failed sends); 1: WhatsApp took it, and the row stays to tell an older change of the
phone from a later one (`pending_settings`). Independent of every other step: it
only adds its own table.
"""

from __future__ import annotations

MIGRATION = """
CREATE TABLE IF NOT EXISTS chat_settings_set (
  slot TEXT NOT NULL,
  chat_id TEXT NOT NULL,
  field TEXT NOT NULL CHECK (field IN ('pinned', 'archived', 'muted_until')),
  value REAL,
  set_at REAL NOT NULL,
  sent INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (slot, chat_id, field)
);
CREATE INDEX IF NOT EXISTS chat_settings_pending ON chat_settings_set (slot) WHERE sent = 0
"""
