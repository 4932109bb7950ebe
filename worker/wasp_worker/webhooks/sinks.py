"""What consumes the outbox: a `Sink` says which events it wants and delivers one
at a time, answering with an `Outcome`. The delivery loop (`delivery`) owns the
order, the retries and the dead letters, so a broker sink (NATS JetStream,
Kafka) can sit beside the webhook sinks without touching the outbox or the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from wasp_worker.webhooks.outbox import Stored

Verdict = Literal["delivered", "retry", "dead", "disable"]


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended. `reason` is short and bounded (a metric label):
    `http_500`, `timeout`, `connect`, ...; `retry_after_s` is the receiver's wish."""

    verdict: Verdict
    reason: str = "ok"
    retry_after_s: float | None = None


class Sink(Protocol):
    @property
    def consumer(self) -> str:
        """Its name in the outbox (progress, dead letters): stable across restarts."""

    @property
    def target(self) -> str:
        """Where it delivers; a disabled consumer is enabled again when this changes."""

    def wants(self, event: Stored) -> bool: ...

    async def send(self, event: Stored) -> Outcome: ...
