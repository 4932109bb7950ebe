"""`wasp operator`: configure kopf and run the handlers of this package.

kopf's own state lives in annotations only (the status schema is structural
and declares just wasp's fields). Several replicas share the work active/
standby through kopf peering; the admission webhook is served by kopf too.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from wasp import logs
from wasp.contract import CRD
from wasp.kube import api_client, connection_info
from wasp_operator.config import OperatorConfig
from wasp_operator.context import Context
from wasp_operator.handlers import register
from wasp_operator.kube import Kube
from wasp_operator.metrics import OperatorMetrics

log = logging.getLogger("wasp.operator")


@dataclass(frozen=True)
class Webhook:
    """Where the admission webhook listens and how the apiserver reaches it."""

    listen: str
    port: int
    host: str
    certfile: Path
    keyfile: Path
    cafile: Path | None
    configuration_name: str  # the ValidatingWebhookConfiguration kopf keeps up to date


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...]
    peering: str | None  # None: standalone
    priority: int | None
    metrics_listen: str
    metrics_port: int | None
    liveness: str | None
    webhook: Webhook | None
    kubeconfig: Path | None


def ensure_peering(api: client.ApiClient, name: str, namespaces: tuple[str, ...]) -> None:
    """Create the kopf peering object: without it, replicas cannot see each other."""
    custom = client.CustomObjectsApi(api)
    try:
        if namespaces:
            for namespace in namespaces:
                custom.create_namespaced_custom_object(
                    "kopf.dev",
                    "v1",
                    namespace,
                    "kopfpeerings",
                    {
                        "apiVersion": "kopf.dev/v1",
                        "kind": "KopfPeering",
                        "metadata": {"name": name},
                    },
                )
        else:
            custom.create_cluster_custom_object(
                "kopf.dev",
                "v1",
                "clusterkopfpeerings",
                {
                    "apiVersion": "kopf.dev/v1",
                    "kind": "ClusterKopfPeering",
                    "metadata": {"name": name},
                },
            )
    except ApiException as error:
        if error.status != 409:
            raise


def run(config: OperatorConfig, options: RunOptions) -> None:
    # JSON lines like the other programs. kopf logs every handler run per object at
    # INFO (thousands of lines a minute with hundreds of shards): `logs.setup` keeps
    # its warnings and errors, and our own events.
    logs.setup()
    api = api_client(options.kubeconfig)
    metrics = OperatorMetrics()
    context = Context(config=config, kube=Kube(api), metrics=metrics)
    registry = kopf.OperatorRegistry()
    register(registry, admission=options.webhook is not None)

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        return connection_info(api.configuration)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=CRD.group)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=CRD.group, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{CRD.group}/operator"
        settings.posting.level = logging.WARNING
        settings.execution.max_workers = 32
        settings.watching.server_timeout = 300
        if options.webhook is not None:
            hook = options.webhook
            settings.admission.server = kopf.WebhookServer(
                addr=hook.listen,
                port=hook.port,
                host=hook.host,
                certfile=str(hook.certfile),
                pkeyfile=str(hook.keyfile),
                cafile=str(hook.cafile) if hook.cafile else None,
            )
            settings.admission.managed = hook.configuration_name
        context.http = aiohttp.ClientSession()
        if options.metrics_port is not None:
            start_http_server(
                options.metrics_port, addr=options.metrics_listen, registry=metrics.registry
            )

    @kopf.on.cleanup(registry=registry)
    async def close(**_: object) -> None:
        if context.http is not None:
            await context.http.close()

    if options.peering is not None:
        ensure_peering(api, options.peering, options.namespaces)
    kopf.run(
        registry=registry,
        memo=context,
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        standalone=options.peering is None,
        peering_name=options.peering,
        # Equal priorities make every replica pause; random ones elect one.
        priority=options.priority if options.priority is not None else random.randint(1, 10**6),
        liveness_endpoint=options.liveness,
    )
