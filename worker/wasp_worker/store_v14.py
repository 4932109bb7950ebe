"""Version 14 of the shard's database: which WhatsApp account each slot is linked to.

`slot_accounts` holds one row per slot: the JID of the account last seen CONNECTED
there and since when (`account_guard`). The queue and the store are keyed by slot
only, so this is what tells the account that came back from another one linked to
the slot since. Independent of every other step: it only adds its own table.
"""

from __future__ import annotations

MIGRATION = """
CREATE TABLE IF NOT EXISTS slot_accounts (
  slot TEXT PRIMARY KEY,
  jid TEXT NOT NULL,
  since REAL NOT NULL
)
"""
