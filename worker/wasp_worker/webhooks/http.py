"""A webhook subscription as a `Sink`: one signed POST per attempt, bounded by
timeouts, its answer turned into an outcome.

- 2xx: delivered. 410: the receiver is gone, the subscription is disabled.
- 408, 429, 5xx, 3xx (redirects are not followed), timeouts, refused
  connections: retried (a `Retry-After` is honoured).
- any other 4xx: the receiver refuses this event; it becomes a dead letter.

The target is checked again before each attempt (its name may resolve
elsewhere now), and the connection itself resolves through `SafeResolver`, so
the address connected to is one that was checked.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult

from wasp.slots import Slot
from wasp.webhooks import Subscription, TargetPolicy, UnsafeTarget, check_target, resolve
from wasp_worker.webhooks import signing
from wasp_worker.webhooks.outbox import Stored
from wasp_worker.webhooks.sinks import Outcome

CONSUMER_PREFIX = "webhook:"


class SafeResolver(aiohttp.abc.AbstractResolver):
    """Resolves like the system does, and refuses a name with an internal address."""

    def __init__(self, policy: Callable[[], TargetPolicy]) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        policy = self._policy()
        found = []
        for address in await resolve(host, port):
            why = policy.refusal(host, address)
            if why is not None:
                raise OSError(f"{host} resolves to {address}, {why}")
            found.append(
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=port,
                    family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        return found

    async def close(self) -> None:
        return None


def retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), None if absent or bad."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def outcome(status: int, retry_after_s: float | None) -> Outcome:
    if 200 <= status < 300:
        return Outcome("delivered")
    reason = f"http_{status}"
    if status == 410:
        return Outcome("disable", reason)
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome("dead", reason)
    return Outcome("retry", reason, retry_after_s)


class WebhookSink:
    def __init__(
        self,
        subscription: Subscription,
        secret: str,
        http: aiohttp.ClientSession,
        policy: Callable[[], TargetPolicy],
        workspace_of: Callable[[str], str],
    ) -> None:
        self.subscription = subscription
        self._secret = secret
        self._http = http
        self._policy = policy
        self._workspace_of = workspace_of

    @property
    def consumer(self) -> str:
        return CONSUMER_PREFIX + self.subscription.id

    @property
    def target(self) -> str:
        return self.subscription.url

    def wants(self, event: Stored) -> bool:
        slot = Slot.parse(event.slot)
        return self.subscription.wants(event.type, slot, self._workspace_of(event.slot))

    async def send(self, event: Stored) -> Outcome:
        try:
            await check_target(self.subscription.url, self._policy())
        except UnsafeTarget:
            return Outcome("retry", "unsafe_target")
        # The wall clock, not the delivery loop's: receivers compare it with theirs.
        at = datetime.now(UTC)
        headers: dict[str, Any] = {
            "content-type": "application/json",
            "user-agent": "wasp-webhooks",
            **signing.headers(self._secret, event.id, event.body, at),
        }
        try:
            async with self._http.post(
                self.subscription.url, data=event.body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                return outcome(
                    response.status, retry_after(response.headers.get("Retry-After"), at)
                )
        except TimeoutError:
            return Outcome("retry", "timeout")
        except aiohttp.ClientError:
            return Outcome("retry", "connect")
