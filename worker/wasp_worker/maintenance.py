"""The shard database's periodic upkeep (retention, the sync log's compaction): a pass
every interval, the first at once, only while the shard's lease is held (a standby
leaves the database to its holder); a failed pass is logged and the next one tries
again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from wasp_worker.events import EventLog


async def every(
    interval_s: float,
    active: Callable[[], bool],
    work: Callable[[], Awaitable[object]],
    log: EventLog,
    failed_event: str,
) -> None:
    """Run `work()` every `interval_s` while `active()`; a failure is logged as
    `failed_event` (with the error's type only) and does not stop the next pass."""
    while True:
        if active():
            try:
                await work()
            except Exception as error:
                log.emit(failed_event, error=type(error).__name__)
        await asyncio.sleep(interval_s)
