"""A slot request's way to its worker: routing → wake → proxy, counted per shard."""

from __future__ import annotations

import contextlib
import json
import time

from aiohttp import web

from wasp.slots import Slot, SlotError
from wasp_master.errors import BadRequest, MasterError, NoShard
from wasp_master.routing import ShardRoute, slot_in_body, slot_in_path
from wasp_master.state import Master, master_of


async def route_request(request: web.Request) -> web.StreamResponse:
    """Any other /api/* request: to the shard that owns its slot (or the first shard)."""
    master = master_of(request)
    started = time.perf_counter()
    slot_text = slot_in_path(request.path)
    body: bytes | None = None
    if slot_text is None and request.body_exists:
        body = await request.read()
        with contextlib.suppress(ValueError):
            slot_text = slot_in_body(json.loads(body))
    route = _route_for(master, slot_text)
    shard = route.id
    code = 500
    try:
        woke = route.suspended
        route = await master.waker.ready(route)
        if woke:
            master.metrics.wakeups.labels(shard, "ok").inc()
        response = await master.proxy.forward(request, route, body)
        code = response.status
        return response
    except MasterError as error:
        code = error.status
        if route.suspended:
            master.metrics.wakeups.labels(shard, "timeout").inc()
        raise
    finally:
        master.metrics.routed(shard, code, time.perf_counter() - started)


def _route_for(master: Master, slot_text: str | None) -> ShardRoute:
    table = master.directory.table
    if slot_text is None:
        first = table.first()
        if first is None:
            raise NoShard("(none: no shards are configured)")
        return first
    try:
        slot = Slot.parse(slot_text)
    except SlotError as error:
        raise BadRequest(str(error)) from None
    route = table.lookup(slot)
    if route is None:
        raise NoShard(str(slot))
    return route
