"""The worker's settings, read once from the environment SPEC.md defines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wasp.slots import SlotId, SlotRange
from wasp_worker.breaker import BreakerSettings
from wasp_worker.ownership import LeaseTiming


class WorkerConfig(BaseModel):
    """Everything `wasp worker` needs; invalid environments fail at start with the reason."""

    model_config = ConfigDict(frozen=True)

    port: int = Field(8080, ge=0, le=65535)
    host: str = "0.0.0.0"
    slot_from: SlotId
    slot_to: SlotId
    max_active: int = Field(20, ge=1)
    max_init: int = Field(2, ge=1)
    warmup_limit: int = Field(10, ge=0)
    config_dir: Path = Path("/config")
    work_dir: Path = Path("/data")
    master_internal_url: str = ""
    master_token: str = Field("", repr=False)
    backend: Literal["neonize", "simulator"] = "neonize"
    shard_name: str | None = Field(None, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=52)
    pod_namespace: str | None = None
    pod_name: str | None = None
    lease_duration_s: int = Field(15, ge=2, le=300)
    access_log: bool = False  # one JSON line per request (http_access)
    # Unset: 2/3 and 1/5 of the duration (client-go's 15/10/2 s, a little tighter).
    lease_renew_deadline_s: float | None = Field(None, gt=0)
    lease_retry_period_s: float | None = Field(None, gt=0)
    simulator_server_dir: Path | None = None
    bad_mac_threshold: int = Field(5, ge=1)
    bad_mac_window_ms: int = Field(60_000, ge=1)
    bad_mac_cooldown_ms: int = Field(300_000, ge=0)

    @model_validator(mode="after")
    def _range_is_valid(self) -> Self:
        SlotRange(self.slot_from, self.slot_to)
        timing = self.lease_timing()
        if not timing.retry_period_s < timing.renew_deadline_s < timing.duration_s:
            raise ValueError(
                "LEASE_RETRY_PERIOD_S < LEASE_RENEW_DEADLINE_S < LEASE_DURATION_S is required: "
                "the holder must stop its sessions before a standby may take over"
            )
        return self

    def lease_timing(self) -> LeaseTiming:
        duration = float(self.lease_duration_s)
        return LeaseTiming(
            duration_s=duration,
            renew_deadline_s=self.lease_renew_deadline_s or duration * 2 / 3,
            retry_period_s=self.lease_retry_period_s or duration / 5,
        )

    def breaker(self) -> BreakerSettings:
        return BreakerSettings(
            threshold=self.bad_mac_threshold,
            window_s=self.bad_mac_window_ms / 1000,
            cooldown_s=self.bad_mac_cooldown_ms / 1000,
        )

    @property
    def slots(self) -> SlotRange:
        return SlotRange(self.slot_from, self.slot_to)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerConfig:
        names = {
            "port": "PORT",
            "host": "HOST",
            "slot_from": "SLOT_FROM",
            "slot_to": "SLOT_TO",
            "max_active": "MAX_ACTIVE",
            "max_init": "MAX_INIT",
            "warmup_limit": "WARMUP_LIMIT",
            "config_dir": "CONFIGDIR",
            "work_dir": "WORKDIR",
            "master_internal_url": "MASTER_INTERNAL_URL",
            "master_token": "MASTER_TOKEN",
            "backend": "BACKEND",
            "shard_name": "SHARD_NAME",
            "pod_namespace": "POD_NAMESPACE",
            "pod_name": "POD_NAME",
            "lease_duration_s": "LEASE_DURATION_S",
            "access_log": "ACCESS_LOG",
            "lease_renew_deadline_s": "LEASE_RENEW_DEADLINE_S",
            "lease_retry_period_s": "LEASE_RETRY_PERIOD_S",
            "simulator_server_dir": "SIMULATOR_SERVER_DIR",
            "bad_mac_threshold": "BAD_MAC_THRESHOLD",
            "bad_mac_window_ms": "BAD_MAC_WINDOW_MS",
            "bad_mac_cooldown_ms": "BAD_MAC_COOLDOWN_MS",
        }
        return cls.model_validate({field: env[var] for field, var in names.items() if var in env})
