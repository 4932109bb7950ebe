"""The worker's side of its shard's lease: hold it, and stop every session without it.

`hold_lease` takes the lease (waiting while another worker holds it) and renews
it; each time it is held the wanted sessions resume (`sessions.resume`), and until
a warm-up has once run to its end under the lease, the bound slots warm up after
them (a lease lost in the middle of the warm-up, say on a slow apiserver at start,
would otherwise leave the slots it had not reached closed for good). `guard_lease`
is the watchdog: it stops the sessions the moment the renew deadline passes,
whatever the renew loop is doing.
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
    `retry_s`; each time it is held resume the suspended sessions, and warm up until a
    warm-up has once ended with the lease held."""
    sessions, log = app[SESSIONS], app[LOG]
    lease = sessions.lease
    assert lease is not None
    warmed = was_held = waiting = False
    warming: asyncio.Task[bool] | None = None
    while True:
        started = time.monotonic()
        try:
            held = await lease.try_acquire()  # bounded in time, never raises: belt and braces
        except Exception as error:
            log.emit("lease_error", lease=lease.describe(), error=type(error).__name__)
            held = lease.held
        if held and was_held and lease.reason != "held":
            log.emit("lease_renew_failed", lease=lease.describe(), reason=lease.reason)
        if warming is not None and warming.done():
            warmed = warmed or _ended_held(warming)
            warming = None
        if held and not was_held:
            log.emit("lease_acquired", lease=lease.describe())
            waiting = False
            if warmed or warming is not None:
                # A warm-up still under way goes on; the sessions the lapse stopped resume.
                app[BACKGROUND].append(asyncio.create_task(resume_sessions(app)))
            else:
                warming = asyncio.create_task(start_up(app))
                app[BACKGROUND].append(warming)
        elif held and not warmed and warming is None:
            # The last warm-up ended without the lease: the slots it left wait no longer.
            warming = asyncio.create_task(run_warmup(app))
            app[BACKGROUND].append(warming)
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


def _ended_held(warming: asyncio.Task[bool]) -> bool:
    """Whether a finished warm-up ran to its end with the lease held."""
    return not warming.cancelled() and warming.exception() is None and warming.result()


async def start_up(app: web.Application) -> bool:
    """What ran before comes back first; then warm-up fills what capacity is left. Whether
    the warm-up ended with the lease held."""
    await resume_sessions(app)
    return await run_warmup(app)


async def resume_sessions(app: web.Application) -> None:
    resumed = await app[SESSIONS].resume()
    app[LOG].emit("sessions_resumed", slots=[str(s) for s in resumed])
