"""The master's settings, from its command line or environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wasp.contract import WORKER_TOKEN_HEADER, parse_tokens


class MasterConfig(BaseModel):
    """Everything `wasp master` needs; a bad value fails at start with the reason."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    host: str = "0.0.0.0"
    port: int = Field(
        3000, ge=0, le=65535, description="PORT_MASTER: API, Socket.IO, console, /health."
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="METRICS_PORT: /metrics, on its own port; None: off."
    )
    master_token: str = Field("", repr=False, description="What workers send as x-master-token.")
    worker_tokens: tuple[str, ...] = Field(
        (),
        repr=False,
        description=f"WORKER_TOKENS: the first is sent to workers as {WORKER_TOKEN_HEADER} "
        "(the others are what workers also accept during a rotation).",
    )
    api_keys: tuple[str, ...] = Field(
        (), repr=False, description="API_KEYS: plain keys accepted on /api/* with full access."
    )
    api_keys_file: Path | None = Field(
        None, description="API_KEYS_FILE: hashed, scoped key records; re-read while running."
    )
    keys_poll_s: float = Field(2.0, gt=0, description="How often the keys file is re-read.")
    config_dir: Path = Field(Path("/config"), description="Shared config: accounts, roles, groups.")
    config_map: str | None = Field(
        None, description="In Kubernetes: the ConfigMap behind CONFIGDIR, where writes go."
    )
    webhook_secrets_file: Path | None = Field(
        None,
        description="Local mode: the webhooks' signing secrets (0600); "
        "default CONFIGDIR/webhook-secrets.json.",
    )
    proxy_credentials_file: Path | None = Field(
        None,
        description="Local mode: the accounts' proxy credentials (0600); "
        "default CONFIGDIR/proxy-credentials.json.",
    )
    webhook_secret: str | None = Field(
        None, description="In Kubernetes: the Secret holding the webhooks' signing secrets."
    )
    namespace: str | None = Field(
        None, description="Kubernetes mode: route to the WhatsAppShards of this namespace."
    )
    shards_json: str | None = Field(None, description="Local mode: the shards, as JSON.")
    shards_file: Path | None = Field(None, description="Local mode: a JSON or YAML shards file.")
    prewarm: int = Field(0, ge=0, description="Keep the first N shards (slot order) awake.")
    wake_timeout_s: float = Field(60.0, gt=0, description="How long a request waits for a wake.")
    connect_timeout_s: float = Field(2.0, gt=0)
    worker_connections: int = Field(
        256, ge=1, description="Most connections kept open to one worker; past it, requests wait."
    )
    read_timeout_s: float = Field(30.0, gt=0, description="Longest silence from a worker.")
    scatter_timeout_s: float = Field(
        3.0,
        gt=0,
        le=60,
        description="SCATTER_TIMEOUT: how long a read across shards waits for each shard "
        "before answering without it (`partial`).",
    )
    health_interval_s: float = Field(2.0, gt=0, description="How often workers' /health is read.")
    endpoint_template: str | None = Field(
        None,
        description="Reach workers here instead of status.endpoint ({name}, {namespace}); "
        "for a master outside the cluster (tests, development).",
    )
    access_log: bool = Field(False, description="One JSON line per request (http_access).")
    kubeconfig: Path | None = None

    @field_validator("worker_tokens")
    @classmethod
    def _tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any("," in token for token in value):
            raise ValueError("WORKER_TOKENS: a token has no commas; give a list")
        return parse_tokens(",".join(value))

    @property
    def worker_token(self) -> str | None:
        """What this master sends to workers: the first of WORKER_TOKENS."""
        return self.worker_tokens[0] if self.worker_tokens else None

    def worker_headers(self) -> dict[str, str]:
        """The credential every request to a worker carries (none without WORKER_TOKENS)."""
        token = self.worker_token
        return {WORKER_TOKEN_HEADER: token} if token else {}
