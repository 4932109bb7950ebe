"""The `wasp` command: one program, one image, a subcommand per role.

Like CloudNativePG's single binary, the same distribution is the operator
(`wasp operator`), the router in front (`wasp master`), the per-shard session
holder (`wasp worker`) and the all-in-one local run (`wasp dev`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from wasp.contract import MASTER_METRICS_PORT, VERSION, default_image, parse_tokens


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="wasp")
def main() -> None:
    """WhatsApp sessions on Kubernetes, sharded by slot."""


@main.command()
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="WATCH_NAMESPACES",
    help="Serve shards of these namespaces only (repeatable); all when omitted.",
)
@click.option(
    "--worker-image",
    envvar="WORKER_IMAGE",
    default=default_image(),
    show_default=True,
    help="Image of worker pods unless a shard sets spec.image.",
)
@click.option(
    "--worker-service-account",
    envvar="WORKER_SERVICE_ACCOUNT",
    default=None,
    help="ServiceAccount of worker pods (they hold a Lease).",
)
@click.option(
    "--config-map",
    envvar="CONFIG_MAP",
    default="wasp-config",
    show_default=True,
    help="ConfigMap with the shared config (accounts, roles, groups).",
)
@click.option(
    "--master-internal-url",
    envvar="MASTER_INTERNAL_URL",
    default="",
    help="Where workers push live events.",
)
@click.option(
    "--master-token-secret",
    envvar="MASTER_TOKEN_SECRET",
    default="wasp-master",
    show_default=True,
    help="Secret with the `master-token` workers send.",
)
@click.option(
    "--worker-tokens-secret",
    envvar="WORKER_TOKENS_SECRET",
    default=None,
    help="Secret with the `worker-tokens` workers accept from the master "
    "(WORKER_TOKENS); the --master-token-secret when unset.",
)
@click.option(
    "--webhook-signing-secret",
    envvar="WEBHOOK_SIGNING_SECRET",
    default=None,
    help="Secret with the webhooks' signing secrets (the master writes it), mounted into workers.",
)
@click.option(
    "--health-url-template",
    envvar="HEALTH_URL_TEMPLATE",
    default=None,
    help="Reach workers' /health here instead of their cluster DNS name "
    "(placeholders {name}, {namespace}, {port}); for operators outside the cluster.",
)
@click.option(
    "--status-interval",
    envvar="STATUS_INTERVAL",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between status refreshes of a shard.",
)
@click.option(
    "--peering",
    envvar="PEERING",
    default="wasp-operator",
    show_default=True,
    help="kopf peering name: replicas with one name elect one active operator.",
)
@click.option(
    "--standalone",
    is_flag=True,
    envvar="STANDALONE",
    help="Run without peering (a single replica).",
)
@click.option(
    "--priority",
    type=int,
    envvar="PRIORITY",
    default=None,
    help="Peering priority (random when omitted).",
)
@click.option("--metrics-listen", envvar="METRICS_LISTEN", default="0.0.0.0", show_default=True)
@click.option(
    "--metrics-port",
    envvar="METRICS_PORT",
    type=int,
    default=9090,
    show_default=True,
    help="Port of /metrics; 0 to disable.",
)
@click.option(
    "--liveness",
    envvar="LIVENESS_ENDPOINT",
    default=None,
    help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz.",
)
@click.option(
    "--webhook-port",
    envvar="WEBHOOK_PORT",
    type=int,
    default=None,
    help="Serve the admission webhook on this port (needs the cert options).",
)
@click.option("--webhook-listen", envvar="WEBHOOK_LISTEN", default="0.0.0.0", show_default=True)
@click.option(
    "--webhook-host",
    envvar="WEBHOOK_HOST",
    default=None,
    help="Host name or IP the apiserver uses to reach the webhook.",
)
@click.option("--webhook-cert", envvar="WEBHOOK_CERT", type=click.Path(path_type=Path))
@click.option("--webhook-key", envvar="WEBHOOK_KEY", type=click.Path(path_type=Path))
@click.option("--webhook-ca", envvar="WEBHOOK_CA", type=click.Path(path_type=Path))
@click.option(
    "--webhook-configuration",
    envvar="WEBHOOK_CONFIGURATION",
    default="wasp-operator.wasp.dev",
    show_default=True,
    help="Name of the ValidatingWebhookConfiguration the operator keeps up to date.",
)
@click.option("--kubeconfig", envvar="KUBECONFIG", type=click.Path(path_type=Path), default=None)
def operator(**options: Any) -> None:
    """Run the Kubernetes operator: WhatsAppShard resources -> StatefulSets."""
    from wasp_operator.config import OperatorConfig
    from wasp_operator.run import RunOptions, Webhook, run

    config = OperatorConfig(
        worker_image=options["worker_image"],
        worker_service_account=options["worker_service_account"],
        config_map=options["config_map"],
        master_internal_url=options["master_internal_url"],
        master_token_secret=options["master_token_secret"],
        worker_tokens_secret=options["worker_tokens_secret"] or options["master_token_secret"],
        webhook_signing_secret=options["webhook_signing_secret"],
        health_url_template=options["health_url_template"],
        status_interval_s=options["status_interval"],
    )
    webhook = None
    if options["webhook_port"]:
        if not (options["webhook_cert"] and options["webhook_key"] and options["webhook_host"]):
            raise click.UsageError(
                "--webhook-port needs --webhook-host, --webhook-cert and --webhook-key"
            )
        webhook = Webhook(
            listen=options["webhook_listen"],
            port=options["webhook_port"],
            host=options["webhook_host"],
            certfile=options["webhook_cert"],
            keyfile=options["webhook_key"],
            cafile=options["webhook_ca"],
            configuration_name=options["webhook_configuration"],
        )
    run(
        config,
        RunOptions(
            namespaces=tuple(options["namespaces"]),
            peering=None if options["standalone"] else options["peering"],
            priority=options["priority"],
            metrics_listen=options["metrics_listen"],
            metrics_port=options["metrics_port"] or None,
            liveness=options["liveness"],
            webhook=webhook,
            kubeconfig=options["kubeconfig"],
        ),
    )


@main.command()
@click.option("--host", envvar="HOST", default="0.0.0.0", show_default=True)
@click.option("--port", envvar=["PORT_MASTER", "PORT"], type=int, default=3000, show_default=True)
@click.option(
    "--metrics-port",
    envvar="METRICS_PORT",
    type=int,
    default=MASTER_METRICS_PORT,
    show_default=True,
    help="Port of /metrics (not served on --port); 0 to disable.",
)
@click.option(
    "-n",
    "--namespace",
    envvar="WATCH_NAMESPACE",
    default=None,
    help="Kubernetes mode: route to this namespace's WhatsAppShards (watched).",
)
@click.option("--shards-json", envvar="SHARDS_JSON", default=None, help="Local mode: shards.")
@click.option(
    "--shards-file",
    envvar="SHARDS_FILE",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Local mode: a JSON or YAML list of {id, port, from, to, workdir}.",
)
@click.option(
    "--config-dir", envvar="CONFIGDIR", type=click.Path(path_type=Path), default="/config"
)
@click.option(
    "--config-map",
    envvar="CONFIG_MAP",
    default=None,
    help="Kubernetes mode: the shared-config ConfigMap that writes go to.",
)
@click.option(
    "--webhook-secrets-file",
    envvar="WEBHOOK_SECRETS_FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Local mode: the webhooks' signing secrets (default CONFIGDIR/webhook-secrets.json).",
)
@click.option(
    "--webhook-secret",
    envvar="WEBHOOK_SECRET",
    default=None,
    help="Kubernetes mode: the Secret that holds the webhooks' signing secrets.",
)
@click.option(
    "--api-keys-file",
    envvar="API_KEYS_FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Hashed, scoped API key records (YAML or JSON; `wasp keys new`), re-read while running.",
)
@click.option("--prewarm", envvar="PREWARM", type=int, default=0, show_default=True)
@click.option("--wake-timeout", envvar="WAKE_TIMEOUT", type=float, default=60.0, show_default=True)
@click.option(
    "--scatter-timeout",
    envvar="SCATTER_TIMEOUT",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds a read across shards waits for each shard before answering without it.",
)
@click.option(
    "--endpoint-template",
    envvar="ENDPOINT_TEMPLATE",
    default=None,
    help="Reach workers here instead of status.endpoint ({name}, {namespace}).",
)
@click.option(
    "--access-log/--no-access-log",
    envvar="ACCESS_LOG",
    default=False,
    show_default=True,
    help="Log every request as a JSON line (event http_access): method, path, status, time.",
)
@click.option("--kubeconfig", envvar="KUBECONFIG", type=click.Path(path_type=Path), default=None)
def master(**options: Any) -> None:
    """Run the master: route /api/* by slot, wake shards, fan live events out.

    Secrets come from the environment only: MASTER_TOKEN (workers' x-master-token),
    WORKER_TOKENS (comma-separated; the first is sent to workers as
    x-wasp-worker-token) and API_KEYS (comma-separated full-access keys for /api/*);
    scoped keys are hashed records in --api-keys-file.
    """
    from pydantic import ValidationError
    from wasp_master.config import MasterConfig
    from wasp_master.keys import KeyRing, KeysError
    from wasp_master.run import serve_kube, serve_local

    keys = tuple(k.strip() for k in os.environ.get("API_KEYS", "").split(",") if k.strip())
    try:
        worker_tokens = parse_tokens(os.environ.get("WORKER_TOKENS", ""))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        config = MasterConfig(
            host=options["host"],
            port=options["port"],
            metrics_port=options["metrics_port"] or None,
            master_token=os.environ.get("MASTER_TOKEN", ""),
            worker_tokens=worker_tokens,
            api_keys=keys,
            api_keys_file=options["api_keys_file"],
            config_dir=options["config_dir"],
            config_map=options["config_map"],
            webhook_secrets_file=options["webhook_secrets_file"],
            webhook_secret=options["webhook_secret"],
            namespace=options["namespace"],
            shards_json=options["shards_json"],
            shards_file=options["shards_file"],
            prewarm=options["prewarm"],
            wake_timeout_s=options["wake_timeout"],
            scatter_timeout_s=options["scatter_timeout"],
            endpoint_template=options["endpoint_template"],
            access_log=options["access_log"],
            kubeconfig=options["kubeconfig"],
        )
    except ValidationError as error:
        raise click.UsageError(str(error)) from None
    try:
        KeyRing(config.api_keys, config.api_keys_file)  # a bad keys file stops the start
    except KeysError as error:
        raise click.UsageError(f"bad API keys file: {error}") from None
    if config.namespace:
        serve_kube(config)
    elif config.shards_json or config.shards_file:
        try:
            serve_local(config)
        except ValueError as error:
            raise click.UsageError(f"bad shards: {error}") from None
    else:
        raise click.UsageError(
            "give --namespace (Kubernetes) or --shards-json/--shards-file (local)"
        )


@main.group()
def keys() -> None:
    """API keys for the master: records to store in its keys file (API_KEYS_FILE)."""


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


@keys.command("new")
@click.option("--id", "key_id", required=True, help="Who holds the key (logged; not secret).")
@click.option(
    "--ops",
    required=True,
    help="Comma-separated operations: read, send, session, config, admin (admin: all).",
)
@click.option("--workspaces", default=None, help="Only these workspaces (comma-separated).")
@click.option("--slots", default=None, help="Only these slot ranges, e.g. A1-A50,B1-B9.")
@click.option(
    "--format", "form", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def keys_new(key_id: str, ops: str, workspaces: str | None, slots: str | None, form: str) -> None:
    """Make a key: the key once on stderr, the record (hash only) on stdout.

    The YAML record is a list item, so `wasp keys new ... >> keys.yaml` appends it
    to a file that starts with `keys:`.
    """
    import json

    import yaml
    from pydantic import ValidationError
    from wasp_master.keys import KeyRecord, hash_key, new_key

    from wasp.validation import problems

    key = new_key()
    try:
        record = KeyRecord.model_validate(
            {
                "id": key_id,
                "hash": hash_key(key),
                "operations": _csv(ops),
                "workspaces": _csv(workspaces),
                "slots": _csv(slots),
            }
        )
    except ValidationError as error:
        raise click.UsageError(problems(error)) from None
    stored = record.model_dump(mode="json", exclude_none=True)
    click.echo(f"API key for {key_id} (shown once; the file keeps only its hash):", err=True)
    click.echo(key, err=True)
    if form == "json":
        click.echo(json.dumps(stored))
    else:
        click.echo(yaml.safe_dump([stored], sort_keys=False, default_flow_style=None).rstrip())


@keys.command("hash")
def keys_hash() -> None:
    """Print the `hash` of a key read from stdin (to move an API_KEYS key into a record)."""
    from wasp_master.keys import hash_key

    given = sys.stdin.readline().strip()
    if not given:
        raise click.UsageError("give the key on stdin")
    click.echo(hash_key(given))


@main.command()
def worker() -> None:
    """Run one shard's worker: keep the WhatsApp sessions of its slot range alive.

    Configured by the environment: SLOT_FROM, SLOT_TO, MAX_ACTIVE, MAX_INIT,
    WARMUP_LIMIT, CONFIGDIR, WORKDIR, MASTER_INTERNAL_URL, MASTER_TOKEN, BACKEND, PORT,
    METRICS_PORT, and WORKER_TOKENS: what the master sends (comma-separated, two during
    a rotation); without it the worker does not start, unless WORKER_INSECURE=true.
    """

    from pydantic import ValidationError
    from wasp_worker.app import serve
    from wasp_worker.config import WorkerConfig

    try:
        config = WorkerConfig()  # pydantic-settings: the process environment
    except ValidationError as error:
        raise click.ClickException(f"invalid worker environment: {error}") from None
    serve(config)


@main.command()
@click.option(
    "--shards-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default="examples/dev-shards.yaml",
    show_default=True,
    help="The shards to run: a JSON or YAML list of {id, port, from, to, workdir}.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=".wasp-dev",
    show_default=True,
    help="Workers' WORKDIRs, the shared config (seeded if absent) and the logs.",
)
@click.option(
    "--backend", type=click.Choice(["simulator", "neonize"]), default="simulator", show_default=True
)
@click.option("--port", type=int, default=3000, show_default=True, help="The master's port.")
@click.option(
    "--base-port",
    type=int,
    default=None,
    help="Workers listen on this port and the next ones instead of the shards file's ports.",
)
@click.option(
    "--metrics-base-port",
    type=int,
    default=MASTER_METRICS_PORT,
    show_default=True,
    help="The master's /metrics on this port, the workers' on the next ones.",
)
def dev(**options: Any) -> None:
    """Run the master and the workers of a shards file locally, until Ctrl-C."""
    from wasp.dev import BadShards, DevOptions, run

    try:
        code = run(DevOptions(**options))
    except BadShards as error:
        raise click.UsageError(str(error)) from None
    sys.exit(code)


if __name__ == "__main__":
    main()
