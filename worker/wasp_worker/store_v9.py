"""Version 9 of the shard's database: the rest of what WhatsApp messages carry.

- `outbound.payload`: what a queued message says beyond its text and media URL, as
  JSON (a reply's quoted id, mentions, a location, a contact card, a poll, the target
  of a reaction, edit or delete, an uploaded file's name on the volume). NULL for the
  rows of earlier versions, which needed none.
- `messages.quoted_id`: the WhatsApp id of the message a reply quotes;
  `messages.payload`: the same JSON for what a received or sent message carries
  besides its body and media (mentions, location, contact cards, poll).
- `reactions`: one emoji per person per message (WhatsApp keeps the latest; an
  empty emoji removes it, so the row goes).
- `poll_votes`: each voter's current choice in a poll (the option names, JSON);
  a new vote replaces the old one, as WhatsApp counts it.
"""

from __future__ import annotations

STATEMENTS = (
    "ALTER TABLE outbound ADD COLUMN payload TEXT",
    "ALTER TABLE messages ADD COLUMN quoted_id TEXT",
    "ALTER TABLE messages ADD COLUMN payload TEXT",
    """CREATE TABLE reactions (
      slot TEXT NOT NULL,
      chat_id TEXT NOT NULL,
      wa_message_id TEXT NOT NULL,
      reactor TEXT NOT NULL,
      emoji TEXT NOT NULL,
      from_me INTEGER NOT NULL DEFAULT 0,
      timestamp REAL NOT NULL,
      PRIMARY KEY (slot, wa_message_id, reactor)
    )""",
    """CREATE TABLE poll_votes (
      slot TEXT NOT NULL,
      chat_id TEXT NOT NULL,
      poll_id TEXT NOT NULL,
      voter TEXT NOT NULL,
      options TEXT NOT NULL DEFAULT '[]',
      timestamp REAL NOT NULL,
      PRIMARY KEY (slot, poll_id, voter)
    )""",
)
MIGRATION = ";\n".join(STATEMENTS)
