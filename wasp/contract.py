"""What the three programs agree on, stated once: each of them derives its side from here.

The operator renders a worker's environment, `wasp dev` starts workers with one,
and the worker reads its own; the master routes to the URL the operator
publishes; a shards file, a WhatsAppShard's name and a worker's SHARD_NAME are
the same kind of name. Whenever two programs restated such a thing they drifted
apart (a shards file accepted `9w`, a name every worker then refused), so the
names, types, defaults and rules live here and the programs import them.

The shared core imports no program: helpers that need a program's own types
(the worker's lease timing object, its breaker settings) stay in that program
and are built from the plain values defined here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wasp import __version__
from wasp.pacing import (
    JITTER,
    MAX_BURST,
    MAX_PER_MINUTE,
    RECIPIENT_BURST,
    RECIPIENT_PER_MINUTE,
    SESSION_BURST,
    SESSION_PER_MINUTE,
    Pacing,
    Rate,
)
from wasp.retention import MAX_AGE_DAYS, MAX_MESSAGES_PER_CHAT, SYNC_HORIZON_DAYS, Retention
from wasp.slots import SlotId, SlotRange

VERSION = __version__
IMAGE_REPOSITORY = "ghcr.io/wasp-dev/wasp"


def image_tag() -> str:
    """The image tag a release publishes: its version (the chart's appVersion is the same)."""
    return VERSION


def default_image() -> str:
    """The worker image of this version, used unless the chart or a shard names another."""
    return f"{IMAGE_REPOSITORY}:{image_tag()}"


@dataclass(frozen=True)
class CustomResource:
    """Names of a custom resource, as its CRD declares them and clients address it."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def resource(self) -> tuple[str, str, str]:
        """(group, version, plural): what kopf handlers and the custom-objects API take."""
        return (self.group, self.version, self.plural)


CRD = CustomResource(
    group="wasp.dev",
    version="v1alpha1",
    kind="WhatsAppShard",
    plural="whatsappshards",
    singular="whatsappshard",
    short_names=("wash",),
    categories=("wasp",),
)

# A shard's name becomes its StatefulSet's, headless Service's and pod's name
# (`<name>-0.<name>`, a DNS-1035 label), and the StatefulSet controller needs
# room for the revision hash it appends; hence a letter first and 52 at most.
SHARD_NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
SHARD_NAME_MAX_LENGTH = 52
SHARD_NAME_RULE = (
    f"a shard name is 1-{SHARD_NAME_MAX_LENGTH} lower-case letters, digits and '-', "
    "starting with a letter and ending with a letter or digit, like 'w1'"
)
_SHARD_NAME_RE = re.compile(SHARD_NAME_PATTERN)


def check_shard_name(name: str) -> str:
    """The name if it is a valid shard name; ValueError saying the rule otherwise."""
    if len(name) > SHARD_NAME_MAX_LENGTH or not _SHARD_NAME_RE.fullmatch(name):
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise ValueError(f"invalid shard name {shown!r}: {SHARD_NAME_RULE}")
    return name


ShardName = Annotated[
    str,
    AfterValidator(check_shard_name),
    WithJsonSchema(
        {"type": "string", "pattern": SHARD_NAME_PATTERN, "maxLength": SHARD_NAME_MAX_LENGTH}
    ),
]
"""A shard's name: the WhatsAppShard's metadata.name, a shards file's `id`, SHARD_NAME."""

WORKER_PORT = 8080
# /metrics has a port of its own, so the API port serves only the API (and the
# master's console): a NetworkPolicy can then let Prometheus reach the metrics
# and nothing else. The operator's is 9090 too, in a pod of its own.
WORKER_METRICS_PORT = 9090
MASTER_METRICS_PORT = 9091
WORKER_ENDPOINT = "http://{name}-0.{name}.{namespace}.svc:{port}"


def worker_endpoint(name: str, namespace: str, port: int = WORKER_PORT) -> str:
    """The in-cluster URL of a shard's worker: its pod's name under the headless Service."""
    return WORKER_ENDPOINT.format(name=name, namespace=namespace, port=port)


# Largest request body either HTTP server reads; the master forwards bodies to
# workers, so a body one accepts the other must accept too.
MAX_BODY_BYTES = 1 << 20
# Except a message's body on /send and /schedule, which may carry its file: a 16 MiB image
# in base64 is 21.4 MiB of JSON; a multipart upload carries up to a document's 100 MiB
# (and its message part). The master streams these through; the worker reads them.
SEND_JSON_MAX_BYTES = 24 << 20
SEND_UPLOAD_MAX_BYTES = (100 << 20) + MAX_BODY_BYTES

# The master's credential on every worker route but the probes (/health, /ready):
# a shared token, sent by the master in this header. WORKER_TOKENS lists the valid
# ones, comma-separated; the master sends the first, a worker accepts any, so a
# rotation is two tokens for a while (docs/operations.md).
WORKER_TOKEN_HEADER = "x-wasp-worker-token"
WORKER_TOKEN_MIN_LENGTH = 16
_TOKEN_RE = re.compile(r"^[\x21-\x2b\x2d-\x7e]+$")  # printable ASCII, no comma or space


def parse_tokens(text: str) -> tuple[str, ...]:
    """WORKER_TOKENS as a tuple (empty for ''); ValueError naming the rule a token breaks,
    never the token."""
    tokens = tuple(part.strip() for part in text.split(",") if part.strip())
    for at, token in enumerate(tokens, 1):
        if len(token) < WORKER_TOKEN_MIN_LENGTH or not _TOKEN_RE.fullmatch(token):
            raise ValueError(
                f"WORKER_TOKENS: token {at} of {len(tokens)} must be at least "
                f"{WORKER_TOKEN_MIN_LENGTH} printable ASCII characters without spaces or commas"
            )
    return tokens


Backend = Literal["neonize", "simulator"]

# Session limits a worker (and so a shard) has unless told otherwise.
MAX_ACTIVE = 20
MAX_INIT = 2
WARMUP_LIMIT = 10
# Sending: messages in flight at once (each account sends one at a time), and transient
# failures retried with backoff until either limit.
SEND_CONCURRENCY = 32
SEND_MAX_ATTEMPTS = 8
SEND_MAX_AGE_S = 86400.0
SEND_RETRY_BASE_S = 2.0
SEND_RETRY_CAP_S = 600.0
SEND_TIMEOUT_S = 60.0
WEBHOOK_RETRY_BASE_S = 1.0
WEBHOOK_RETRY_CAP_S = 3600.0
CONFIG_DIR = Path("/config")
WORK_DIR = Path("/data")


class WorkerEnv(BaseSettings):
    """The worker's environment: each field's alias is its variable's name.

    `wasp worker` reads it from the process environment (`WorkerEnv()` or a
    subclass); the operator and `wasp dev` build one from field names and render
    it (`as_env`, `as_kubernetes_env`), so what they write is what the worker
    reads, validated by the same rules before any pod or process starts.
    Field order is the order of the rendered environment.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        # Every variable is one scalar; a slot like A1 is not JSON to decode.
        enable_decoding=False,
        # An error names the variable and the rule, never the value: it may be a token.
        hide_input_in_errors=True,
    )

    shard_name: ShardName | None = Field(None, alias="SHARD_NAME")
    pod_namespace: str | None = Field(None, alias="POD_NAMESPACE")
    pod_name: str | None = Field(None, alias="POD_NAME")
    port: int = Field(WORKER_PORT, alias="PORT", ge=0, le=65535)
    slot_from: SlotId = Field(alias="SLOT_FROM")
    slot_to: SlotId = Field(alias="SLOT_TO")
    max_active: int = Field(MAX_ACTIVE, alias="MAX_ACTIVE", ge=1)
    max_init: int = Field(MAX_INIT, alias="MAX_INIT", ge=1)
    warmup_limit: int = Field(WARMUP_LIMIT, alias="WARMUP_LIMIT", ge=0)
    config_dir: Path = Field(CONFIG_DIR, alias="CONFIGDIR")
    work_dir: Path = Field(WORK_DIR, alias="WORKDIR")
    backend: Backend = Field("neonize", alias="BACKEND")
    master_internal_url: str = Field("", alias="MASTER_INTERNAL_URL")
    master_token: str = Field("", alias="MASTER_TOKEN", repr=False)
    # What callers must send (WORKER_TOKEN_HEADER); unset, `wasp worker` refuses to start
    # unless WORKER_INSECURE (a worker on one's own machine) opens every route.
    worker_tokens: str = Field("", alias="WORKER_TOKENS", repr=False)
    insecure: bool = Field(False, alias="WORKER_INSECURE")
    metrics_port: int = Field(WORKER_METRICS_PORT, alias="METRICS_PORT", ge=0, le=65535)
    host: str = Field("0.0.0.0", alias="HOST")
    lease_duration_s: int = Field(15, alias="LEASE_DURATION_S", ge=2, le=300)
    # Unset: 2/3 and 1/5 of the duration (client-go's 15/10/2 s, a little tighter).
    lease_renew_deadline_s: float | None = Field(None, alias="LEASE_RENEW_DEADLINE_S", gt=0)
    lease_retry_period_s: float | None = Field(None, alias="LEASE_RETRY_PERIOD_S", gt=0)
    access_log: bool = Field(False, alias="ACCESS_LOG")  # one JSON line per request
    simulator_server_dir: Path | None = Field(None, alias="SIMULATOR_SERVER_DIR")
    bad_mac_threshold: int = Field(5, alias="BAD_MAC_THRESHOLD", ge=1)
    bad_mac_window_ms: int = Field(60_000, alias="BAD_MAC_WINDOW_MS", ge=1)
    bad_mac_cooldown_ms: int = Field(300_000, alias="BAD_MAC_COOLDOWN_MS", ge=0)
    # Sending (docs/operations.md): lanes, retries, and the anti-ban pace (`wasp.pacing`),
    # which a shard's spec sets (`pacing`) and an account may override through the API.
    send_concurrency: int = Field(SEND_CONCURRENCY, alias="SEND_CONCURRENCY", ge=1, le=1024)
    send_max_attempts: int = Field(SEND_MAX_ATTEMPTS, alias="SEND_MAX_ATTEMPTS", ge=1, le=100)
    send_max_age_s: float = Field(
        SEND_MAX_AGE_S, alias="SEND_MAX_AGE_S", gt=0, le=30 * 86400, allow_inf_nan=False
    )
    send_retry_base_s: float = Field(
        SEND_RETRY_BASE_S, alias="SEND_RETRY_BASE_S", gt=0, le=3600, allow_inf_nan=False
    )
    send_retry_cap_s: float = Field(
        SEND_RETRY_CAP_S, alias="SEND_RETRY_CAP_S", gt=0, le=86400, allow_inf_nan=False
    )
    send_timeout_s: float = Field(
        SEND_TIMEOUT_S, alias="SEND_TIMEOUT_S", gt=0, le=3600, allow_inf_nan=False
    )
    pacing_session_per_minute: int = Field(
        SESSION_PER_MINUTE,
        alias="PACING_SESSION_PER_MINUTE",
        ge=1,
        le=MAX_PER_MINUTE,
    )
    pacing_session_burst: int = Field(
        SESSION_BURST, alias="PACING_SESSION_BURST", ge=1, le=MAX_BURST
    )
    pacing_recipient_per_minute: int = Field(
        RECIPIENT_PER_MINUTE,
        alias="PACING_RECIPIENT_PER_MINUTE",
        ge=1,
        le=MAX_PER_MINUTE,
    )
    pacing_recipient_burst: int = Field(
        RECIPIENT_BURST, alias="PACING_RECIPIENT_BURST", ge=1, le=MAX_BURST
    )
    pacing_jitter: float = Field(JITTER, alias="PACING_JITTER", ge=0, le=1, allow_inf_nan=False)
    # Retention (`wasp.retention`), which a shard's spec sets (`retention`): unset, kept.
    # The pruning runs every RETENTION_INTERVAL_S, in batches of RETENTION_BATCH messages;
    # the sync log's compaction too, in batches of RETENTION_SYNC_BATCH change rows.
    retention_max_age_days: int | None = Field(
        None, alias="RETENTION_MAX_AGE_DAYS", ge=1, le=MAX_AGE_DAYS
    )
    retention_max_messages_per_chat: int | None = Field(
        None, alias="RETENTION_MAX_MESSAGES_PER_CHAT", ge=1, le=MAX_MESSAGES_PER_CHAT
    )
    retention_sync_horizon_days: int = Field(
        SYNC_HORIZON_DAYS, alias="RETENTION_SYNC_HORIZON_DAYS", ge=1, le=MAX_AGE_DAYS
    )
    retention_interval_s: float = Field(
        3600.0, alias="RETENTION_INTERVAL_S", gt=0, le=7 * 86400, allow_inf_nan=False
    )
    retention_batch: int = Field(500, alias="RETENTION_BATCH", ge=1, le=100_000)
    retention_sync_batch: int = Field(2000, alias="RETENTION_SYNC_BATCH", ge=1, le=100_000)
    # Webhooks: the signing secrets (the master writes them; in Kubernetes a Secret mounted
    # here; unset: CONFIGDIR/webhook-secrets.json), how long an event is retried, the
    # longest one delivery attempt may take, and the backoff between attempts (full jitter
    # in [0, min(cap, base * 2^(attempts-1)))).
    webhook_secrets_file: Path | None = Field(None, alias="WEBHOOK_SECRETS_FILE")
    # Per-slot proxy credentials (`wasp.proxies.ProxyCredentials`; in Kubernetes a key of
    # the same mounted Secret; unset: CONFIGDIR/proxy-credentials.json).
    proxy_credentials_file: Path | None = Field(None, alias="PROXY_CREDENTIALS_FILE")
    webhook_horizon_s: float = Field(86400.0, alias="WEBHOOK_HORIZON_S", gt=0)
    webhook_timeout_s: float = Field(10.0, alias="WEBHOOK_TIMEOUT_S", gt=0, le=300)
    webhook_retry_base_s: float = Field(
        WEBHOOK_RETRY_BASE_S, alias="WEBHOOK_RETRY_BASE_S", gt=0, le=3600, allow_inf_nan=False
    )
    webhook_retry_cap_s: float = Field(
        WEBHOOK_RETRY_CAP_S, alias="WEBHOOK_RETRY_CAP_S", gt=0, le=86400, allow_inf_nan=False
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        SlotRange(self.slot_from, self.slot_to)
        parse_tokens(self.worker_tokens)
        duration, renew, retry = self.lease_seconds()
        if self.send_retry_cap_s < self.send_retry_base_s:
            raise ValueError("SEND_RETRY_CAP_S must not be less than SEND_RETRY_BASE_S")
        if self.webhook_retry_cap_s < self.webhook_retry_base_s:
            raise ValueError("WEBHOOK_RETRY_CAP_S must not be less than WEBHOOK_RETRY_BASE_S")
        if not retry < renew < duration:
            raise ValueError(
                "LEASE_RETRY_PERIOD_S < LEASE_RENEW_DEADLINE_S < LEASE_DURATION_S is required: "
                "the holder must stop its sessions before a standby may take over"
            )
        return self

    def shard_pacing(self) -> Pacing:
        """The shard's pace, as the PACING_* variables give it."""
        return Pacing(
            session=Rate(perMinute=self.pacing_session_per_minute, burst=self.pacing_session_burst),
            recipient=Rate(
                perMinute=self.pacing_recipient_per_minute, burst=self.pacing_recipient_burst
            ),
            jitter=self.pacing_jitter,
        )

    def shard_retention(self) -> Retention:
        """The shard's retention, as the RETENTION_* variables give it."""
        return Retention(
            maxAgeDays=self.retention_max_age_days,
            maxMessagesPerChat=self.retention_max_messages_per_chat,
            syncHorizonDays=self.retention_sync_horizon_days,
        )

    def lease_seconds(self) -> tuple[float, float, float]:
        """(duration, renew deadline, retry period) with the unset ones derived."""
        duration = float(self.lease_duration_s)
        return (
            duration,
            self.lease_renew_deadline_s or duration * 2 / 3,
            self.lease_retry_period_s or duration / 5,
        )

    @property
    def slots(self) -> SlotRange:
        return SlotRange(self.slot_from, self.slot_to)

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token a caller may send (two during a rotation)."""
        return parse_tokens(self.worker_tokens)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The variable that carries `field` (KeyError for a field that does not exist)."""
        alias = cls.model_fields[field].alias
        assert alias is not None  # every field declares its variable
        return alias

    @classmethod
    def env_names(cls) -> tuple[str, ...]:
        return tuple(cls.env_name(field) for field in cls.model_fields)

    def as_env(self) -> dict[str, str]:
        """The fields that were given, as variables; the rest stay the worker's defaults."""
        data = self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
        return {name: _env_text(value) for name, value in data.items()}

    def as_kubernetes_env(
        self, value_from: Mapping[str, Mapping[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """A container's `env` list: the given fields as values, and fields whose value
        the pod gets elsewhere (`value_from`, by field name) as `valueFrom` sources."""
        sources = dict(value_from or {})
        unknown = set(sources) - set(type(self).model_fields)
        if unknown:
            raise KeyError(f"not worker settings: {sorted(unknown)}")
        values = self.as_env()
        env: list[dict[str, Any]] = []
        for field in type(self).model_fields:
            name = self.env_name(field)
            if field in sources:
                env.append({"name": name, "valueFrom": dict(sources[field])})
            elif name in values:
                env.append({"name": name, "value": values[name]})
        return env


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Variables the operator sets on every worker; a shard's extra env may not
# override them (a wrong SLOT_FROM would let two workers own one account).
RESERVED_ENV: tuple[str, ...] = tuple(
    WorkerEnv.env_name(field)
    for field in (
        "shard_name",
        "pod_namespace",
        "pod_name",
        "port",
        "slot_from",
        "slot_to",
        "max_active",
        "max_init",
        "warmup_limit",
        "config_dir",
        "work_dir",
        "backend",
        "master_internal_url",
        "master_token",
        "worker_tokens",
        "insecure",
        "metrics_port",
        # The shard's spec sets these (`pacing`): its env may not contradict it.
        "pacing_session_per_minute",
        "pacing_session_burst",
        "pacing_recipient_per_minute",
        "pacing_recipient_burst",
        "pacing_jitter",
        # ... and these (`retention`).
        "retention_max_age_days",
        "retention_max_messages_per_chat",
        "retention_sync_horizon_days",
    )
)
