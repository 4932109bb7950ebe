"""The operator's writes to the Kubernetes API, through the official client.

Children are written with server-side apply under one field manager, so the
operator only ever sets the fields it owns and converges from any state: a
second apply of the same manifest changes nothing. Called from kopf's sync
handlers, which run in kopf's thread pool, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from wasp.contract import CRD
from wasp_operator.children import MANAGER, Manifest, claim_name

APPLY = "application/apply-patch+yaml"
log = logging.getLogger(__name__)


def _apply(patch: Callable[..., Any], manifest: Manifest) -> Any:
    """Server-side apply of `manifest` as the operator's field manager."""
    meta = manifest["metadata"]
    return patch(
        meta["name"],
        meta["namespace"],
        manifest,
        field_manager=MANAGER,
        force=True,
        _content_type=APPLY,
    )


class Kube:
    """Typed entry points to the API calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def apply_service(self, manifest: Manifest) -> None:
        _apply(self.core.patch_namespaced_service, manifest)

    def apply_statefulset(self, manifest: Manifest) -> Any:
        """Apply; recreate (orphaning pod and claim) when an immutable field changed."""
        meta = manifest["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        try:
            return self._apply_sts(manifest)
        except ApiException as error:
            if error.status != 422 or "Forbidden" not in str(error):
                raise
        # volumeClaimTemplates are immutable: replace the StatefulSet but keep its
        # pod and claim (the new one adopts them), then grow the claim in place.
        log.info("recreating StatefulSet %s/%s: an immutable field changed", namespace, name)
        self.apps.delete_namespaced_stateful_set(
            name, namespace, body=client.V1DeleteOptions(propagation_policy="Orphan")
        )
        self._expand_claim(manifest)
        return self._apply_sts(manifest)

    def _apply_sts(self, manifest: Manifest) -> Any:
        return _apply(self.apps.patch_namespaced_stateful_set, manifest)

    def _expand_claim(self, manifest: Manifest) -> None:
        meta = manifest["metadata"]
        wanted = manifest["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
        try:
            self.core.patch_namespaced_persistent_volume_claim(
                claim_name(meta["name"]),
                meta["namespace"],
                {"spec": {"resources": {"requests": wanted}}},
            )
        except ApiException as error:
            if error.status == 404:
                return  # no claim yet: the StatefulSet will make it at the new size
            # Shrinking, or a class without expansion: report, keep the old size.
            log.warning(
                "claim of %s/%s not resized: %s", meta["namespace"], meta["name"], error.reason
            )

    def read_statefulset(self, name: str, namespace: str) -> Any | None:
        try:
            return self.apps.read_namespaced_stateful_set(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_shard_status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            CRD.group,
            CRD.version,
            namespace,
            CRD.plural,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )
