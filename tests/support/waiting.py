"""Waiting for a condition in a test: checked again and again, with a bound, never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], what: str, timeout: float = 30, every: float = 0.1
) -> T:
    """The first truthy value `check` gives within `timeout` seconds; else fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


async def eventually_async(
    check: Callable[[], Awaitable[T | None]], what: str, within_s: float = 30, every: float = 0.05
) -> T:
    """`eventually` for a check that awaits (inside the event loop under test)."""
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        await asyncio.sleep(every)
