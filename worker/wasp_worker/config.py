"""The worker's settings: the shared contract's environment, plus the worker's own views of it.

Names, types, defaults and validation of every variable are `wasp.contract.WorkerEnv`,
which the operator and `wasp dev` render from; this class only adds what needs
the worker's own types (lease timing, the bad-MAC breaker).
"""

from __future__ import annotations

from wasp.contract import WorkerEnv
from wasp_worker.breaker import BreakerSettings
from wasp_worker.ownership import LeaseTiming


class WorkerConfig(WorkerEnv):
    """Everything `wasp worker` needs; `WorkerConfig()` reads the process environment and an
    invalid one fails at start with the reason."""

    def lease_timing(self) -> LeaseTiming:
        duration, renew_deadline, retry_period = self.lease_seconds()
        return LeaseTiming(
            duration_s=duration, renew_deadline_s=renew_deadline, retry_period_s=retry_period
        )

    def breaker(self) -> BreakerSettings:
        return BreakerSettings(
            threshold=self.bad_mac_threshold,
            window_s=self.bad_mac_window_ms / 1000,
            cooldown_s=self.bad_mac_cooldown_ms / 1000,
        )
