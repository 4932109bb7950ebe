"""Waking a suspended shard: clear `spec.suspend`, wait until it serves, then route.

The operator scales the shard's StatefulSet back to one replica when `suspend`
turns false; the master waits for the shard to report Ready and for its worker
to answer `/health`. Waiters for one shard share one wake-up. `PREWARM` shards
are woken as soon as they are seen suspended, and so stay awake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from kubernetes import client

from wasp.contract import CRD
from wasp_master.errors import ShardDown
from wasp_master.routing import ShardRoute
from wasp_master.shards import ShardDirectory

log = logging.getLogger("wasp.master")
Patch = Callable[[str], Awaitable[None]]


def kube_unsuspend(api: client.ApiClient, namespace: str) -> Patch:
    """A JSON merge patch `spec.suspend: false` through the kubernetes client (in a thread)."""
    custom = client.CustomObjectsApi(api)

    async def patch(name: str) -> None:
        await asyncio.to_thread(
            custom.patch_namespaced_custom_object,
            CRD.group,
            CRD.version,
            namespace,
            CRD.plural,
            name,
            {"spec": {"suspend": False}},
        )

    return patch


class Waker:
    def __init__(
        self, directory: ShardDirectory, unsuspend: Patch | None, timeout_s: float
    ) -> None:
        self.directory = directory
        self.unsuspend = unsuspend
        self.timeout_s = timeout_s
        self._waking: dict[str, asyncio.Task[ShardRoute]] = {}
        self.http: aiohttp.ClientSession | None = None

    def is_waking(self, shard_id: str) -> bool:
        return shard_id in self._waking

    async def ready(self, route: ShardRoute) -> ShardRoute:
        """The route once its shard can serve; wakes it if suspended. ShardDown on timeout."""
        if not route.suspended and (route.ready or route.id not in self._waking):
            return route  # not asleep: a worker that cannot answer is the proxy's 503
        if self.unsuspend is None:  # local mode: nothing to wake; the proxy reports it down
            return route
        task = self._waking.get(route.id)
        if task is None:
            task = asyncio.create_task(self._wake(route.id))
            self._waking[route.id] = task
            task.add_done_callback(lambda _: self._waking.pop(route.id, None))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except TimeoutError:
            raise ShardDown(
                route.id, f"still waking up after {self.timeout_s:g} s", retry_after_s=10
            ) from None

    async def _wake(self, shard_id: str) -> ShardRoute:
        assert self.unsuspend is not None
        started = time.monotonic()
        route = self.directory.table.get(shard_id)
        if route is not None and route.suspended:
            log.info(json.dumps({"event": "shard_wake", "shard": shard_id}))
            await self.unsuspend(shard_id)
        while True:
            route = self.directory.table.get(shard_id)
            if route is None:
                raise ShardDown(shard_id, "it was deleted while waking")
            if not route.suspended and route.ready and await self._answers(route):
                log.info(
                    json.dumps(
                        {
                            "event": "shard_awake",
                            "shard": shard_id,
                            "seconds": round(time.monotonic() - started, 2),
                        }
                    )
                )
                return route
            await self.directory.changed(0.5)

    async def _answers(self, route: ShardRoute) -> bool:
        if self.http is None:
            return True
        try:
            async with self.http.get(
                route.url + "/health", timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def keep_awake(self, count: int) -> None:
        """PREWARM: the first `count` shards in slot order never stay suspended."""
        if self.unsuspend is None or count == 0:
            return
        while True:
            for route in self.directory.table.routes[:count]:
                if route.suspended and route.id not in self._waking:
                    try:
                        await self.unsuspend(route.id)
                        log.info(json.dumps({"event": "shard_prewarm", "shard": route.id}))
                    except Exception as error:
                        log.warning(
                            json.dumps(
                                {
                                    "event": "shard_prewarm_failed",
                                    "shard": route.id,
                                    "error": str(error)[:200],
                                }
                            )
                        )
            await self.directory.changed(5.0)
