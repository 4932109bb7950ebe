"""What a shard needs in the cluster: its headless Service and its StatefulSet.

Pure functions from a shard's spec to the manifests the operator applies with
server-side apply; no I/O here, so every decision is unit-tested directly.
One StatefulSet of one replica per shard: the StatefulSet's pod identity is
what guarantees that one pod at a time owns the range.
"""

from __future__ import annotations

from typing import Any

from wasp.contract import CONFIG_DIR, CRD, WORK_DIR, WorkerEnv
from wasp.shard import WhatsAppShardSpec
from wasp_operator.config import OperatorConfig

MANAGER = "wasp-operator"
SHARD_LABEL = f"{CRD.group}/shard"
DATA_VOLUME = "data"
DATA_PATH = str(WORK_DIR)
CONFIG_PATH = str(CONFIG_DIR)
# The webhooks' signing secrets: a directory mount, so the Secret's updates reach the worker.
WEBHOOK_SECRETS_PATH = "/etc/wasp/webhooks"
RUN_AS = 10001

Manifest = dict[str, Any]


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "wasp-worker",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/part-of": "wasp",
        "app.kubernetes.io/managed-by": MANAGER,
        SHARD_LABEL: name,
    }


def selector(name: str) -> dict[str, str]:
    """The stable subset of labels that selects a shard's pod (selectors are immutable)."""
    return {"app.kubernetes.io/name": "wasp-worker", SHARD_LABEL: name}


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": CRD.api_version,
        "kind": CRD.kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, namespace: str, uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(name),
        "ownerReferences": [owner_reference(name, uid)],
    }


def claim_name(name: str) -> str:
    """The PersistentVolumeClaim the StatefulSet makes for its only pod."""
    return f"{DATA_VOLUME}-{name}-0"


def service(name: str, namespace: str, uid: str, config: OperatorConfig) -> Manifest:
    """Headless Service: gives the worker pod its stable DNS name `<name>-0.<name>`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, uid),
        "spec": {
            "clusterIP": "None",
            "selector": selector(name),
            # The master must reach a starting worker to wait for its health.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "http", "port": config.worker_port, "targetPort": "http"}],
        },
    }


def worker_env(name: str, spec: WhatsAppShardSpec, config: OperatorConfig) -> list[dict[str, Any]]:
    """The worker's environment (the contract's `WorkerEnv`, validated by the rules the worker
    reads it with), then the shard's own extra variables."""
    capacity = spec.capacity
    settings = WorkerEnv.model_validate(
        {
            "shard_name": name,
            "port": config.worker_port,
            "metrics_port": config.worker_metrics_port,
            "insecure": False,  # explicit, and reserved: a shard's env cannot open a worker
            "slot_from": spec.slotFrom,
            "slot_to": spec.slotTo,
            "max_active": capacity.maxActive,
            "max_init": capacity.maxInit,
            "warmup_limit": capacity.warmupLimit,
            "pacing_session_per_minute": spec.pacing.session.perMinute,
            "pacing_session_burst": spec.pacing.session.burst,
            "pacing_recipient_per_minute": spec.pacing.recipient.perMinute,
            "pacing_recipient_burst": spec.pacing.recipient.burst,
            "pacing_jitter": spec.pacing.jitter,
            "retention_max_age_days": spec.retention.maxAgeDays,
            "retention_max_messages_per_chat": spec.retention.maxMessagesPerChat,
            "retention_sync_horizon_days": spec.retention.syncHorizonDays,
            "config_dir": CONFIG_PATH,
            "work_dir": DATA_PATH,
            "backend": spec.backend,
            "master_internal_url": config.master_internal_url,
            **(
                {
                    "webhook_secrets_file": f"{WEBHOOK_SECRETS_PATH}/webhook-secrets.json",
                    "proxy_credentials_file": f"{WEBHOOK_SECRETS_PATH}/proxy-credentials.json",
                }
                if config.webhook_signing_secret
                else {}
            ),
        }
    )
    env = settings.as_kubernetes_env(
        {
            "pod_namespace": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            "pod_name": {"fieldRef": {"fieldPath": "metadata.name"}},
            "master_token": {
                "secretKeyRef": {
                    "name": config.master_token_secret,
                    "key": "master-token",
                    "optional": True,
                }
            },
            # Not optional: without its tokens a worker would refuse the master (and
            # `wasp worker` does not start), so the pod waits for the Secret instead.
            "worker_tokens": {
                "secretKeyRef": {
                    "name": config.worker_tokens_secret,
                    "key": config.worker_tokens_key,
                }
            },
        }
    )
    env.append({"name": "PYTHONDONTWRITEBYTECODE", "value": "1"})
    for extra in spec.env or []:
        env.append(extra.model_dump(exclude_none=True))
    return env


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _resources(spec: WhatsAppShardSpec) -> dict[str, Any]:
    if spec.resources is not None:
        return spec.resources.model_dump(exclude_none=True)
    # Sessions are mostly idle sockets; memory grows with maxActive.
    return {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": f"{256 + 8 * spec.capacity.maxActive}Mi"},
    }


def pod_template(name: str, spec: WhatsAppShardSpec, config: OperatorConfig) -> Manifest:
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.image or config.worker_image,
        "args": ["worker"],
        "ports": [
            {"name": "http", "containerPort": config.worker_port},
            {"name": "metrics", "containerPort": config.worker_metrics_port},
        ],
        "env": worker_env(name, spec, config),
        # Ready means holding the shard's lease: a standby pod gets no traffic, and a
        # holder past its renew deadline leaves the endpoints within one period.
        "readinessProbe": _probe("/ready", period=2, failures=1),
        "livenessProbe": _probe("/health", period=10, failures=6),
        "resources": _resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_PATH},
            {"name": "config", "mountPath": CONFIG_PATH, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if spec.imagePullPolicy:
        container["imagePullPolicy"] = spec.imagePullPolicy
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 30,
        "volumes": [
            {"name": "config", "configMap": {"name": config.config_map, "optional": True}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if config.webhook_signing_secret:
        container["volumeMounts"].append(
            {"name": "webhook-secrets", "mountPath": WEBHOOK_SECRETS_PATH, "readOnly": True}
        )
        pod_spec["volumes"].append(
            {
                "name": "webhook-secrets",
                "secret": {"secretName": config.webhook_signing_secret, "optional": True},
            }
        )
    if config.worker_service_account:
        pod_spec["serviceAccountName"] = config.worker_service_account
    for field in ("nodeSelector", "tolerations", "affinity"):
        value = getattr(spec, field)
        if value is not None:
            pod_spec[field] = value
    return {"metadata": {"labels": labels(name)}, "spec": pod_spec}


def statefulset(
    name: str,
    namespace: str,
    uid: str,
    spec: WhatsAppShardSpec,
    config: OperatorConfig,
    *,
    conflicted: bool = False,
) -> Manifest:
    """The shard's StatefulSet; zero replicas when suspended or in slot conflict."""
    claim: dict[str, Any] = {
        "metadata": {"name": DATA_VOLUME, "labels": labels(name)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage.size}},
        },
    }
    if spec.storage.storageClassName:
        claim["spec"]["storageClassName"] = spec.storage.storageClassName
    retention = "Retain" if spec.storage.retainOnDelete else "Delete"
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(name, namespace, uid),
        "spec": {
            "replicas": 0 if spec.suspend or conflicted else 1,
            "serviceName": name,
            "selector": {"matchLabels": selector(name)},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": retention,
                "whenScaled": "Retain",
            },
            "template": pod_template(name, spec, config),
            "volumeClaimTemplates": [claim],
        },
    }
