"""The webhooks of one worker, assembled: the outbox (in the shard's database),
the subscriptions from CONFIGDIR, one HTTP client for every delivery, the deliverer.

`emit` is how the worker's code without a transaction of its own (the live
feed's session events) puts events in the outbox; code that records a change
in SQLite calls `outbox.add` in that transaction instead, then `outbox.added()`,
which wakes the deliverer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from wasp.webhooks import Event
from wasp_worker.events import EventLog
from wasp_worker.webhooks.delivery import Backoff, Clock, Deliverer, DeliveryMetrics, WallClock
from wasp_worker.webhooks.http import SafeResolver, WebhookSink
from wasp_worker.webhooks.outbox import Outbox
from wasp_worker.webhooks.sinks import Sink
from wasp_worker.webhooks.source import Subscriptions

PRUNE_EVERY_S = 600.0


class Webhooks:
    def __init__(
        self,
        outbox: Outbox,
        config_dir: Path,
        secrets_file: Path | None,
        log: EventLog,
        registry: CollectorRegistry,
        timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.subscriptions = Subscriptions(config_dir, secrets_file, log)
        self.clock = clock or WallClock()
        self.deliverer = Deliverer(
            self.outbox, self.sinks, log, DeliveryMetrics(registry), backoff, self.clock, rng
        )
        self._log = log
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0))
        self._http: aiohttp.ClientSession | None = None
        self._sinks: dict[tuple[str, str, str], WebhookSink] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def sinks(self) -> list[Sink]:
        """One sink per enabled subscription with a secret, rebuilt when they change."""
        self.subscriptions.refresh()
        if self._http is None:
            return []
        current: dict[tuple[str, str, str], WebhookSink] = {}
        for subscription in self.subscriptions.document.subscriptions:
            secret = self.subscriptions.secrets.get(subscription.id)
            if secret is None or not subscription.enabled:
                continue  # its events wait in the outbox until it is enabled
            key = (subscription.id, subscription.model_dump_json(), secret)
            current[key] = self._sinks.get(key) or WebhookSink(
                subscription,
                secret,
                self._http,
                lambda: self.subscriptions.policy,
                self.subscriptions.workspace_of,
            )
        self._sinks = current
        return list(current.values())

    def emit(self, events: list[Event]) -> None:
        """Write the events in the background, in call order, then wake the deliverer."""
        task = asyncio.ensure_future(self.outbox.write(events))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if task.cancelled():  # exception() would raise CancelledError here
            self._log.emit("webhook_outbox_write_failed", error="CancelledError")
        elif task.exception() is not None:
            self._log.emit("webhook_outbox_write_failed", error=type(task.exception()).__name__)

    async def open(self) -> None:
        resolver = SafeResolver(lambda: self.subscriptions.policy)
        connector = aiohttp.TCPConnector(resolver=resolver, limit=64, limit_per_host=8)
        self._http = aiohttp.ClientSession(timeout=self._timeout, connector=connector)

    async def run(self) -> None:
        deliver = asyncio.create_task(self.deliverer.run())
        try:
            while True:
                await asyncio.sleep(PRUNE_EVERY_S)
                await self.outbox.prune(self.clock.now() - self.deliverer.backoff.horizon_s)
        finally:
            deliver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deliver

    async def close(self) -> None:
        if self._writes:
            await asyncio.wait(self._writes, timeout=3)
        await self.deliverer.stop()
        if self._http is not None:
            await self._http.close()
