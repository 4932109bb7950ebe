"""Waiting for an asyncio event with a bound, without losing a cancellation.

On Python 3.11 `asyncio.wait_for(event.wait(), t)` returns normally when the task
is cancelled at the moment the event is set, so the cancellation is lost and a
loop built on it never stops (a worker's shutdown hung on it). `asyncio.timeout`
keeps the cancellation; every bounded wait on an event goes through here.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passed; whether it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()
