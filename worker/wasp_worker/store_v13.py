"""Version 13 of the shard's database: the unread conversations indexed apart.

The unread summary reads only conversations with unread messages (a fifth or so
of them), and without an index of its own it scanned every conversation twice:
once for the per-slot totals, once to sort the unread ones' keys for the page.
Two partial indexes hold just the unread rows:

- `conversations_unread_slot` (slot, archived, muted_until, unread): the totals'
  `GROUP BY slot` walks it in slot order, covered, with no sort;
- `conversations_unread_last` (last_timestamp, slot, id): the unread chats of
  many slots in the `last` order are its order read backwards, so a page stops
  after its rows instead of sorting every unread key.

On the benchmark's shard (20,000 conversations, 4,070 unread, 50 accounts) the
totals went from 3.5 to 1.1 ms and the first page from 2.9 to 0.05 ms (SQL
alone). An index costs a write only when an unread conversation changes.
"""

from __future__ import annotations

MIGRATION = """
CREATE INDEX conversations_unread_slot ON conversations (slot, archived, muted_until, unread)
  WHERE unread > 0;
CREATE INDEX conversations_unread_last ON conversations (last_timestamp, slot, id)
  WHERE unread > 0
"""
