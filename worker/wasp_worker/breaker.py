"""The circuit breaker for decrypt failures ("Bad MAC"): a corrupt Signal session
shows as a burst of undecryptable messages; past the threshold the session is
dropped, its auth wiped (new QR) and not retried before the cooldown."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BreakerSettings:
    threshold: int = 5  # BAD_MAC_THRESHOLD: more than this many ...
    window_s: float = 60.0  # BAD_MAC_WINDOW_MS / 1000: ... within this window trips it
    cooldown_s: float = 300.0  # BAD_MAC_COOLDOWN_MS / 1000: no reconnect before this


@dataclass
class BadMacBreaker:
    settings: BreakerSettings
    hits: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> bool:
        """Count one failure at `now`; True when this one trips the breaker."""
        self.hits.append(now)
        while self.hits and self.hits[0] <= now - self.settings.window_s:
            self.hits.popleft()
        if len(self.hits) > self.settings.threshold:
            self.hits.clear()
            return True
        return False
