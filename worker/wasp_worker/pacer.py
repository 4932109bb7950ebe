"""Anti-ban pacing of outbound messages: token buckets per session and per recipient.

Each account (slot) has a bucket for everything it sends, and one for each chat it
sends to; a message leaves only when both hold a token. A bucket holds at most
`burst` tokens and gains `perMinute` a minute, so over any stretch of t seconds
an account sends at most `burst + perMinute * t / 60` messages (to one chat: the
recipient bucket's figures). A message held by a bucket is not an error: it
stays `queued` and its lane waits for the token, plus a random part of one
interval (`jitter`), so paced messages do not leave on a regular beat.

The rules are the shard's (`wasp.pacing.Pacing`, from the worker's environment)
with an account's own override on top. Buckets live in memory: a restarted
worker starts them full, which allows one burst.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from wasp.pacing import Pacing, PacingOverride, Rate

# Recipient buckets that have refilled completely are dropped past this many: a full
# bucket is the same as none.
PRUNE_ABOVE = 10_000


@dataclass
class TokenBucket:
    rate: Rate
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: Rate, now: float) -> TokenBucket:
        return cls(rate, float(rate.burst), now)

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(
                float(self.rate.burst), self.tokens + (now - self.at) * self.rate.perMinute / 60
            )
            self.at = now

    def wait(self, now: float) -> float:
        """Seconds until a token is here (0: one is)."""
        self._refill(now)
        missing = 1 - self.tokens
        return 0.0 if missing <= 1e-9 else missing * 60 / self.rate.perMinute

    def take(self, now: float) -> None:
        self._refill(now)
        if self.tokens < 1 - 1e-9:
            raise RuntimeError("token taken from an empty bucket")
        self.tokens -= 1

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.rate.burst

    def with_rate(self, rate: Rate, now: float) -> TokenBucket:
        """The same bucket under new rules (never more tokens than the new burst)."""
        self._refill(now)
        return TokenBucket(rate, min(self.tokens, float(rate.burst)), now)


class Pacer:
    """The buckets of every account of one worker, and the rules each one follows."""

    def __init__(
        self,
        shard: Pacing,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.shard = shard
        self.clock = clock
        self.rng = rng or random.Random()
        self.overrides: dict[str, PacingOverride] = {}
        self._sessions: dict[str, TokenBucket] = {}
        self._recipients: dict[tuple[str, str], TokenBucket] = {}
        self._held_until: dict[str, float] = {}

    def rules(self, slot: str) -> Pacing:
        return self.shard.merged(self.overrides.get(slot))

    def override(self, slot: str, override: PacingOverride | None) -> None:
        """Set (None: clear) one account's own rules; its buckets follow them at once."""
        if override is None:
            self.overrides.pop(slot, None)
        else:
            self.overrides[slot] = override
        rules, now = self.rules(slot), self.clock()
        if slot in self._sessions:
            self._sessions[slot] = self._sessions[slot].with_rate(rules.session, now)
        for key, bucket in self._recipients.items():
            if key[0] == slot:
                self._recipients[key] = bucket.with_rate(rules.recipient, now)
        self._held_until.pop(slot, None)

    def _session(self, slot: str, now: float) -> TokenBucket:
        bucket = self._sessions.get(slot)
        if bucket is None:
            bucket = self._sessions[slot] = TokenBucket.full(self.rules(slot).session, now)
        return bucket

    def _recipient(self, slot: str, chat: str, now: float) -> TokenBucket:
        bucket = self._recipients.get((slot, chat))
        if bucket is None:
            bucket = TokenBucket.full(self.rules(slot).recipient, now)
            self._recipients[(slot, chat)] = bucket
        return bucket

    def recipient_wait(self, slot: str, chat: str, now: float) -> float:
        """Seconds until the slot may send to `chat` as far as that chat's bucket goes."""
        bucket = self._recipients.get((slot, chat))
        return 0.0 if bucket is None else bucket.wait(now)

    def session_wait(self, slot: str, now: float) -> float:
        """Seconds until the slot may send anything: its bucket's wait, and once held, a
        random part of one interval more (kept until it sends, so a wake-up in between
        does not skip it)."""
        held = self._held_until.get(slot)
        if held is not None:
            return max(0.0, held - now)
        wait = self._session(slot, now).wait(now)
        if wait <= 0:
            return 0.0
        rules = self.rules(slot)
        wait += self.rng.uniform(0, rules.jitter * 60 / rules.session.perMinute)
        self._held_until[slot] = now + wait
        return wait

    def may_send(self, slot: str, chat: str, now: float) -> bool:
        """Both buckets hold a token now (the rules may have changed since a lane chose)."""
        return self._session(slot, now).wait(now) <= 0 and self.recipient_wait(slot, chat, now) <= 0

    def take(self, slot: str, chat: str, now: float) -> None:
        """One message leaves now: a token from both buckets (both must hold one)."""
        session, recipient = self._session(slot, now), self._recipient(slot, chat, now)
        if session.wait(now) > 0 or recipient.wait(now) > 0:
            raise RuntimeError(f"pacing: no token for {slot} now")
        session.take(now)
        recipient.take(now)
        self._held_until.pop(slot, None)
        if len(self._recipients) > PRUNE_ABOVE:
            self._recipients = {
                key: bucket for key, bucket in self._recipients.items() if not bucket.is_full(now)
            }
