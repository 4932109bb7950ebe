"""The operator's own settings: what every shard's children share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wasp.contract import WORKER_ENDPOINT, WORKER_METRICS_PORT, WORKER_PORT, default_image


class OperatorConfig(BaseModel):
    """Settings of one `wasp operator` process (from its command line or environment)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_image: str = Field(default_image(), description="Default worker image.")
    worker_service_account: str | None = Field(
        None,
        description="ServiceAccount of worker pods (needs Leases); namespace default if unset.",
    )
    config_map: str = Field("wasp-config", description="Shared config (accounts, roles, groups).")
    master_internal_url: str = Field(
        "", description="Where workers push live events (MASTER_INTERNAL_URL)."
    )
    master_token_secret: str = Field(
        "wasp-master", description="Secret holding the `master-token` key workers send."
    )
    worker_tokens_secret: str = Field(
        "wasp-master",
        description="Secret holding the `worker-tokens` key: what workers accept from the "
        "master (WORKER_TOKENS). Required: a worker pod does not start without it.",
    )
    webhook_signing_secret: str | None = Field(
        None,
        description="Secret with the webhooks' signing secrets (key webhook-secrets.json, "
        "written by the master) and the accounts' proxy credentials (key "
        "proxy-credentials.json), mounted into workers; optional.",
    )
    worker_tokens_key: str = Field("worker-tokens", description="Its key in that Secret.")
    worker_port: int = WORKER_PORT
    worker_metrics_port: int = Field(
        WORKER_METRICS_PORT, ge=1, le=65535, description="Workers' METRICS_PORT (/metrics)."
    )
    endpoint_template: str = Field(
        WORKER_ENDPOINT, description="The worker URL written to status.endpoint."
    )
    health_url_template: str | None = Field(
        None,
        description="Where the operator reads a worker's /health; the endpoint when unset. "
        "Lets an operator outside the cluster (tests, development) reach workers.",
    )
    status_interval_s: float = Field(10.0, gt=0, description="How often status is refreshed.")
    health_timeout_s: float = Field(2.0, gt=0)

    def endpoint(self, name: str, namespace: str) -> str:
        return self.endpoint_template.format(name=name, namespace=namespace, port=self.worker_port)

    def health_url(self, name: str, namespace: str) -> str:
        base = self.health_url_template or self.endpoint_template
        url = base.format(name=name, namespace=namespace, port=self.worker_port)
        return url.rstrip("/") + "/health"
