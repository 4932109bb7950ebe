"""The simulator's honest part of a proxy: it talks to no network, so a proxy cannot carry
its sessions, but one TCP connect says whether the proxy answers at all.

Before a slot with a proxy starts, `ProxyGate.admit` connects to the proxy once. A proxy
that does not answer leaves the slot DISCONNECTED with `proxy_unreachable` (detail
`{"proxy": "host:port", "error": ...}`, never the credentials) and tries again after the
neonize backend's backoff (2, 5, 10, 20, 40, 60 s), not in a hot loop. A proxy that is
not a valid URL holds the slot with `proxy_invalid`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from wasp.slots import Slot
from wasp_worker.backends.base import OnStatus, StatusEvent
from wasp_worker.proxies import ProxyFor, ProxyInvalid, probe

BACKOFF_S = (2, 5, 10, 20, 40, 60)
Start = Callable[[Slot, OnStatus], Awaitable[None]]


@dataclass
class _Wait:
    on_status: OnStatus
    failures: int = 0
    task: asyncio.Task[None] | None = None


@dataclass
class ProxyGate:
    proxies: ProxyFor
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    waits: dict[Slot, _Wait] = field(default_factory=dict)

    async def admit(self, slot: Slot, on_status: OnStatus, start: Start) -> bool:
        """True when the slot may start now; else it was told why and `start` is retried."""
        # A retry runs as the wait's task: `cancel` (a stop) ends it wherever it is.
        wait = self.waits.get(slot) or _Wait(on_status)
        try:
            proxy = await asyncio.to_thread(self.proxies, slot)
        except ProxyInvalid:
            await on_status(StatusEvent(slot, "DISCONNECTED", reason="proxy_invalid"))
            return False
        why = await probe(proxy) if proxy is not None else None
        if proxy is None or why is None:
            self.waits.pop(slot, None)
            return True
        detail = {"proxy": proxy.endpoint, "error": why}
        await on_status(
            StatusEvent(slot, "DISCONNECTED", reason="proxy_unreachable", detail=detail)
        )
        delay = BACKOFF_S[min(wait.failures, len(BACKOFF_S) - 1)]
        wait.failures += 1

        async def retry() -> None:
            await self.sleep(delay)
            if self.waits.get(slot) is wait:
                await start(slot, wait.on_status)

        self.waits[slot] = wait
        wait.task = asyncio.create_task(retry())
        return False

    async def cancel(self, slot: Slot) -> bool:
        """Stop waiting for the slot's proxy; True when it was waiting."""
        wait = self.waits.pop(slot, None)
        if wait is None or wait.task is None:
            return False
        wait.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await wait.task
        await wait.on_status(StatusEvent(slot, "DISCONNECTED", reason="stopped"))
        return True
