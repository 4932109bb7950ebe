"""What the simulated WhatsApp server saw, read straight from its file: the tests' count
of messages sent and delivered, independent of the worker's own queue."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from wasp_worker.backends.simulator import ServerLedger


@dataclass(frozen=True)
class ServerCounts:
    sends: Counter[str]  # message id -> times a worker sent it to the server
    arrivals: Counter[str]  # message id -> times it reached the recipient's device

    @property
    def repeated_sends(self) -> int:
        return sum(self.sends.values()) - len(self.sends)


def server_counts(directory: Path) -> ServerCounts:
    """Every arrival leaves one `delivered` receipt on its way back to the sender."""
    with sqlite3.connect(directory / ServerLedger.FILE) as db:
        sends = Counter(dict(db.execute("SELECT wa_message_id, sends FROM accepted").fetchall()))
        arrivals: Counter[str] = Counter()
        for (fields,) in db.execute("SELECT fields FROM mailbox WHERE kind='receipt'"):
            receipt = json.loads(fields)
            if receipt["state"] == "delivered":
                arrivals.update(receipt["message_ids"])
    return ServerCounts(sends, arrivals)
