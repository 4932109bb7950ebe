"""`wasp master`: serve the API and events, in Kubernetes mode or local mode.

Kubernetes mode (a namespace is given): the routing table follows the
namespace's WhatsAppShards through a kopf watch that runs in the same event
loop; kopf also owns SIGTERM, and the HTTP server stops after it. Local mode
(SHARDS_JSON or a shards file): a fixed table, no waking.

Either way one aiohttp server listens on the public port and serves every
request itself: the API, the proxy to workers, Socket.IO and the console.
/metrics has a port of its own (METRICS_PORT), for Prometheus only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator

import kopf
from aiohttp import web

from wasp import logs
from wasp.kube import api_client
from wasp.metrics_port import serving_metrics
from wasp_master import proxy_credentials
from wasp_master.app import build_app
from wasp_master.config import MasterConfig
from wasp_master.live import settle_gc
from wasp_master.proxy_credentials import (
    CredentialStore,
    FileCredentialStore,
    SecretCredentialStore,
)
from wasp_master.shards import ShardDirectory, load_shards, watcher
from wasp_master.shared_config import ConfigMapStore, ConfigStore, DirectoryStore
from wasp_master.state import MASTER
from wasp_master.wake import kube_unsuspend
from wasp_master.webhook_store import DirectoryWebhookStore, KubeWebhookStore, WebhookStore

log = logging.getLogger("wasp.master")


def _started(config: MasterConfig, mode: str) -> None:
    log.info(
        json.dumps(
            {
                "event": "master_start",
                "port": config.port,
                "mode": mode,
                "api_keys": len(config.api_keys),  # how many, never which
                "api_keys_file": str(config.api_keys_file) if config.api_keys_file else None,
                "master_token": bool(config.master_token),
                "worker_tokens": len(config.worker_tokens),  # how many, never which
                "metrics_port": config.metrics_port,
            }
        )
    )
    if not config.worker_tokens:
        log.warning(
            json.dumps(
                {
                    "event": "worker_token_missing",
                    "reason": "no WORKER_TOKENS: workers that require one refuse this master",
                }
            )
        )
    if not config.api_keys and config.api_keys_file is None:
        log.warning(
            json.dumps(
                {"event": "api_open", "reason": "no API_KEYS or API_KEYS_FILE: /api/* is open"}
            )
        )


@contextlib.asynccontextmanager
async def serving(config: MasterConfig, app: web.Application) -> AsyncIterator[int]:
    """The app on the public port (yielded: the bound one when the config asks for 0), and
    /metrics on the metrics port when one is configured."""
    if config.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)
        runner = web.AppRunner(app, access_log_class=logs.JsonAccessLogger)
    else:
        runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        registry = app[MASTER].metrics.registry
        async with serving_metrics(registry, config.host, config.metrics_port):
            settle_gc()  # the app is built: what exists now lives as long as the process
            yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _serve_local(config: MasterConfig, app: web.Application) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serving(config, app):
        _started(config, "local")
        await stop.wait()


def serve_local(config: MasterConfig) -> None:
    logs.setup()
    directory = ShardDirectory()
    for shard in load_shards(config.shards_json, config.shards_file):
        directory.put(shard.route())
    app = build_app(config, directory, DirectoryStore(config.config_dir))
    asyncio.run(_serve_local(config, app))


async def _serve_kube(config: MasterConfig) -> None:
    assert config.namespace is not None
    api = api_client(config.kubeconfig, pool_size=8)
    directory = ShardDirectory()
    store: ConfigStore = (
        ConfigMapStore(api, config.namespace, config.config_map)
        if config.config_map
        else DirectoryStore(config.config_dir)
    )
    webhooks: WebhookStore = (
        KubeWebhookStore(api, config.namespace, config.config_map, config.webhook_secret)
        if config.config_map and config.webhook_secret
        else DirectoryWebhookStore(config.config_dir, config.webhook_secrets_file)
    )
    credentials: CredentialStore = (
        SecretCredentialStore(api, config.namespace, config.webhook_secret)
        if config.webhook_secret
        else FileCredentialStore(
            config.proxy_credentials_file or config.config_dir / proxy_credentials.KEY
        )
    )
    app = build_app(
        config, directory, store, kube_unsuspend(api, config.namespace), webhooks, credentials
    )
    async with serving(config, app):
        _started(config, "kubernetes")
        await kopf.operator(
            registry=watcher(directory, api.configuration, config.endpoint_template),
            standalone=True,
            clusterwide=False,
            namespaces=[config.namespace],
        )


def serve_kube(config: MasterConfig) -> None:
    logs.setup()
    asyncio.run(_serve_kube(config))
