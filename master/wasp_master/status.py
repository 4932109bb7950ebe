"""`GET /api/status`: every shard, whether its worker answers, and its store's figures.

Each shard's `/data/status` is read at once, in parallel, bounded by the scatter
timeout; a shard that does not answer is listed `reachable: false` with the
reason, and a suspended one is not woken (its figures would cost a pod start).
The figures span every slot of a shard, so only unscoped keys may read them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from wasp_master.errors import Forbidden, MasterError
from wasp_master.routing import ShardRoute
from wasp_master.state import KEY, Master, ShardHealth, master_of

STATUS_PATH = "/data/status"


async def _shard(master: Master, route: ShardRoute) -> dict[str, Any]:
    seen = master.health.get(route.id, ShardHealth())
    shown: dict[str, Any] = {
        **route.describe(),
        "suspended": route.suspended,
        "ready": route.ready,
        "active": seen.active,
        "maxActive": seen.max_active,
        "reachable": False,
    }
    if route.suspended:
        return {**shown, "reason": "suspended: not woken for a status read"}
    started = time.perf_counter()
    try:
        code, body = await master.proxy.get_json(
            route, STATUS_PATH, {}, master.config.scatter_timeout_s
        )
    except MasterError as error:
        return {**shown, "reason": error.reason}
    if code != 200 or not isinstance(body, dict):
        said = body.get("error") if isinstance(body, dict) else None
        return {**shown, "reason": f"worker answered {code}: {str(said)[:200]}"}
    figures = {k: v for k, v in body.items() if k != "ok"}
    milliseconds = round((time.perf_counter() - started) * 1000, 1)
    return {**shown, "reachable": True, "ms": milliseconds, "store": figures}


async def status(request: web.Request) -> web.Response:
    master, key = master_of(request), request[KEY]
    if not key.unrestricted:
        raise Forbidden(
            f"key {key.id!r} is scoped to {key.scope()}: a shard's figures span all its "
            "slots, so only an unscoped key may read them"
        )
    routes = master.directory.table.routes
    shards = await asyncio.gather(*(_shard(master, route) for route in routes))
    return web.json_response(
        {
            "ok": True,
            "shards": shards,
            "reachable": sum(1 for s in shards if s["reachable"]),
            "unreachable": [s["id"] for s in shards if not s["reachable"]],
        }
    )
