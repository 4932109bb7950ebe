"""Version 10 of the shard's database: receipts for message ids it does not know yet.

A backend that cannot send under the queue row's id (neonize: whatsmeow names
each message) learns WhatsApp's id only when its send call returns, and the
recipient's device may answer before that. Such a receipt names an id no row
and no stored message has: it waits in `unmatched_receipts` (the furthest state
per id) until `finish` gives a row that id, and goes after a day (a receipt for
a message this shard never stores, such as an old one from the phone, waits for
nothing).
"""

from __future__ import annotations

MIGRATION = """
CREATE TABLE unmatched_receipts (
  slot TEXT NOT NULL,
  wa_message_id TEXT NOT NULL,
  state TEXT NOT NULL,
  at REAL NOT NULL,
  PRIMARY KEY (slot, wa_message_id)
);
CREATE INDEX unmatched_receipts_at ON unmatched_receipts (at)
"""
KEPT_S = 86400.0  # how long an unmatched receipt waits for its message
