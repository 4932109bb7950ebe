"""The pace of number checks against an independent count: over any stretch of t seconds
an account checks at most burst + perMinute * t / 60 numbers, a refused check takes
nothing, and its wait is exactly when the numbers would fit."""

from __future__ import annotations

import copy
import random

from wasp_worker.number_checks import NumberChecks


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_then_the_refill_rate_and_refusals_take_nothing() -> None:
    clock = Clock()
    checks = NumberChecks(burst=50, per_minute=10, clock=clock)
    assert checks.take("A1", 50) == 0
    assert checks.take("A1", 1) == 6  # one number per 6 s
    assert checks.take("A2", 50) == 0  # each account its own bucket
    clock.now = 5.0
    assert checks.take("A1", 1) == 1  # refused: nothing taken, 1 s to go
    clock.now = 6.0
    assert checks.take("A1", 1) == 0
    assert checks.take("A1", 3) == 18


def test_never_more_than_burst_plus_rate_over_any_stretch() -> None:
    rng = random.Random(7)
    for _ in range(50):
        clock = Clock()
        burst, per_minute = rng.randint(1, 50), rng.randint(1, 120)
        checks = NumberChecks(burst=burst, per_minute=per_minute, clock=clock)
        granted: list[tuple[float, int]] = []
        for _ in range(200):
            clock.now += rng.choice([0.0, 0.5, 3.0, 20.0])
            count = rng.randint(1, burst)
            wait = checks.take("A1", count)
            if wait == 0:
                granted.append((clock.now, count))
            else:  # the wait is right: the same check fits then, and not a second before
                assert wait >= 1
                for delay, fits in ((wait, True), (wait - 1, False)):
                    later = copy.deepcopy(checks)  # its clock too
                    assert isinstance(later.clock, Clock)
                    later.clock.now += delay
                    assert (later.take("A1", count) == 0) is fits
        # The oracle: for every window of granted checks, a count against the bound.
        for i, (start, _) in enumerate(granted):
            total = 0
            for at, count in granted[i:]:
                total += count
                assert total <= burst + per_minute * (at - start) / 60 + 1e-6
