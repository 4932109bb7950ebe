"""The worker's side of its shard's lease: hold it, and stop every session without it.

`hold_lease` takes the lease (waiting while another worker holds it) and renews
it; each time it is held the wanted sessions resume (`sessions.resume`), and the
first time the bound slots warm up after them. `guard_lease` is the watchdog: it stops the sessions
the moment the renew deadline passes, whatever the renew loop is doing.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from wasp_worker.state import BACKGROUND, LOG, SESSIONS
from wasp_worker.warmup import run_warmup

GUARD_MAX_SLEEP_S = 60.0
GUARD_IDLE_S = 0.1


async def hold_lease(app: web.Application, retry_s: float) -> None:
    """Take the shard's lease (waiting while another worker holds it) and renew it every
    `retry_s`; warm up the first time it is held, resume the suspended sessions after."""
    sessions, log = app[SESSIONS], app[LOG]
    lease = sessions.lease
    assert lease is not None
    warmed = was_held = waiting = False
    while True:
        started = time.monotonic()
        try:
            held = await lease.try_acquire()  # bounded in time, never raises: belt and braces
        except Exception as error:
            log.emit("lease_error", lease=lease.describe(), error=type(error).__name__)
            held = lease.held
        if held and was_held and lease.reason != "held":
            log.emit("lease_renew_failed", lease=lease.describe(), reason=lease.reason)
        if held and not was_held:
            log.emit("lease_acquired", lease=lease.describe())
            waiting = False
            first, warmed = not warmed, True
            work = start_up(app) if first else resume_sessions(app)
            app[BACKGROUND].append(asyncio.create_task(work))
        elif not held and was_held:
            log.emit("lease_lost", lease=lease.describe(), reason=lease.reason)
            await suspend_sessions(app)  # the watchdog did, unless the lease went another way
        elif not held and not waiting:
            log.emit("lease_wait", lease=lease.describe(), reason=lease.reason)
            waiting = True
        was_held = held
        await asyncio.sleep(max(0.0, retry_s - (time.monotonic() - started)))


async def guard_lease(app: web.Application) -> None:
    """The watchdog: stop every session the moment the renew deadline passes, whatever
    the renew loop is doing (its call may hang until its timeout)."""
    sessions, log = app[SESSIONS], app[LOG]
    lease = sessions.lease
    assert lease is not None
    while True:
        left = lease.remaining_s()
        if left > 0:
            await asyncio.sleep(min(left, GUARD_MAX_SLEEP_S))
            continue
        if sessions.active:
            log.emit("lease_deadline_passed", lease=lease.describe(), reason=lease.reason)
            await suspend_sessions(app)
        await asyncio.sleep(GUARD_IDLE_S)  # not held: no session can start; look again soon


async def suspend_sessions(app: web.Application) -> None:
    stopped = await app[SESSIONS].suspend_all()
    if stopped:
        app[LOG].emit("sessions_stopped", slots=[str(s) for s in stopped])


async def start_up(app: web.Application) -> None:
    """What ran before comes back first; then warm-up fills what capacity is left."""
    await resume_sessions(app)
    await run_warmup(app)


async def resume_sessions(app: web.Application) -> None:
    resumed = await app[SESSIONS].resume()
    app[LOG].emit("sessions_resumed", slots=[str(s) for s in resumed])
