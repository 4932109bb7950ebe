"""A dynamic volume provisioner for the loopback test cluster.

kwok fakes kubelets but not storage: a PersistentVolumeClaim of the
`wasp.dev/loopback-provisioner` StorageClass would stay Pending forever. This
process plays the external provisioner's part of the real protocol: for each
pending claim it creates a PersistentVolume pre-bound to it (`claimRef`), and
kube-controller-manager's PV controller does the binding, as in a real
cluster. Released volumes of this provisioner are deleted (reclaim `Delete`).
Nothing is mounted: the volume is a hostPath that no kubelet will ever open.

    python -m tests.support.provisioner --kubeconfig PATH
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

PROVISIONER = "wasp.dev/loopback-provisioner"
log = logging.getLogger("provisioner")


def _our_classes(storage: Any) -> set[str]:
    return {
        sc.metadata.name
        for sc in storage.list_storage_class().items
        if sc.provisioner == PROVISIONER
    }


def volume_for(claim: Any) -> client.V1PersistentVolume:
    """The PersistentVolume that satisfies `claim`, pre-bound to it."""
    size = (claim.spec.resources.requests or {}).get("storage", "1Gi")
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(
            name=f"pvc-{claim.metadata.uid}",
            annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER},
        ),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": size},
            access_modes=claim.spec.access_modes or ["ReadWriteOnce"],
            persistent_volume_reclaim_policy="Delete",
            storage_class_name=claim.spec.storage_class_name,
            volume_mode=claim.spec.volume_mode or "Filesystem",
            host_path=client.V1HostPathVolumeSource(
                path=f"/var/lib/wasp-loopback/{claim.metadata.uid}"
            ),
            claim_ref=client.V1ObjectReference(
                api_version="v1",
                kind="PersistentVolumeClaim",
                namespace=claim.metadata.namespace,
                name=claim.metadata.name,
                uid=claim.metadata.uid,
            ),
        ),
    )


def provision(core: Any, claim: Any, classes: set[str]) -> None:
    wanted = claim.spec.storage_class_name
    if wanted not in classes or claim.spec.volume_name or claim.status.phase != "Pending":
        return
    try:
        core.create_persistent_volume(volume_for(claim))
        log.info(
            "provisioned pvc-%s for %s/%s",
            claim.metadata.uid,
            claim.metadata.namespace,
            claim.metadata.name,
        )
    except ApiException as error:
        if error.status != 409:  # already provisioned on an earlier event
            raise


def reclaim(core: Any, volume: Any) -> None:
    annotations = volume.metadata.annotations or {}
    if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
        return
    if (
        volume.status.phase == "Released"
        and volume.spec.persistent_volume_reclaim_policy == "Delete"
    ):
        try:
            core.delete_persistent_volume(volume.metadata.name)
        except ApiException as error:
            if error.status != 404:
                raise


def run() -> None:
    core = client.CoreV1Api()
    storage = client.StorageV1Api()
    while True:
        try:
            serve(core, storage)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # The apiserver went away (a test's outage): wait for it like a controller would.
            logging.info("apiserver unreachable (%s); retrying", type(error).__name__)
            time.sleep(1)


def serve(core: client.CoreV1Api, storage: client.StorageV1Api) -> None:
    while True:
        classes = _our_classes(storage)
        for volume in core.list_persistent_volume().items:
            reclaim(core, volume)
        claims = core.list_persistent_volume_claim_for_all_namespaces()
        for claim in claims.items:
            provision(core, claim, classes)
        # Volumes and claims are watched in turns: claims carry the work, and a
        # periodic relist (the watch timeout) picks up released volumes and new classes.
        stream = watch.Watch().stream(
            core.list_persistent_volume_claim_for_all_namespaces,
            resource_version=claims.metadata.resource_version,
            timeout_seconds=5,
        )
        try:
            for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    provision(core, event["object"], classes)
        except ApiException as error:
            if error.status != 410:  # resource version too old: relist
                raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config.load_kube_config(args.kubeconfig)
    run()


if __name__ == "__main__":
    main()
