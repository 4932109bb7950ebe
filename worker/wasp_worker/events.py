"""Structured log events: one JSON object per line, and the recent ones in memory.

The recent-log ring buffer is what `GET /logs` serves (recent logs, newest last).
Fields are the caller's; nothing here ever receives tokens or message bodies.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import Any, TextIO


class EventLog:
    """Writes `{"ts", "event", ...}` lines and keeps the last `size` of them."""

    def __init__(self, size: int = 500, stream: TextIO | None = None) -> None:
        self._recent: deque[dict[str, Any]] = deque(maxlen=size)
        self._stream = stream if stream is not None else sys.stdout

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "event": event, **fields}
        self._recent.append(record)
        self._stream.write(json.dumps(record, default=str) + "\n")
        self._stream.flush()

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        items = list(self._recent)
        return items[-limit:] if limit else items
