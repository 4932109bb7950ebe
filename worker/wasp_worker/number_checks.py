"""The pace of an account's "is this number on WhatsApp" checks: bulk checks are what gets
accounts banned, so each account has a token bucket, one token per number checked.

A bucket holds at most `BURST` numbers and gains `PER_MINUTE` a minute. A check that
needs more tokens than the bucket holds takes none and is refused with the seconds
until it would fit (429 with Retry-After). Buckets live in memory, like the sending
pacer's: a restarted worker starts them full.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BURST = 50  # numbers: one full check (`worker_api.MAX_NUMBER_CHECK`) after a quiet time
PER_MINUTE = 10  # numbers a minute on average after that
EPSILON = 1e-9  # float refills: the wait given and the check made then must agree


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class NumberChecks:
    """Every account's bucket of number checks, on one worker."""

    burst: int = BURST
    per_minute: float = PER_MINUTE
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, slot: str, count: int) -> float:
        """Take `count` tokens and answer 0, or take none and answer the seconds (at least
        1) until they would be there. More than `burst` can never fit: the caller's
        batch limit is the burst."""
        now = self.clock()
        bucket = self.buckets.setdefault(slot, _Bucket(float(self.burst), now))
        if now > bucket.at:
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.at) * self.per_minute / 60
            )
            bucket.at = now
        missing = count - bucket.tokens - EPSILON  # a hair short counts as there
        if missing > 0:
            return max(1.0, math.ceil(missing * 60 / self.per_minute))
        bucket.tokens -= count
        return 0.0
