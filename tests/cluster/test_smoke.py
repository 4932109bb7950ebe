"""Smoke tests of the loopback control plane itself: CRDs, StatefulSets, volumes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.support.cluster import LocalCluster
from tests.support.waiting import eventually

pytestmark = pytest.mark.cluster

SMOKE_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.smoke.wasp.dev
spec:
  group: smoke.wasp.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
"""


def test_crd_and_object_applied_with_kubectl_read_back_with_client(
    cluster: LocalCluster, api_client: client.ApiClient, namespace: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=SMOKE_CRD)
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/gadgets.smoke.wasp.dev", "--timeout=30s"
    )
    gadget = {
        "apiVersion": "smoke.wasp.dev/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1", "namespace": namespace},
        "spec": {"size": 3},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(gadget))

    read = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "smoke.wasp.dev", "v1", namespace, "gadgets", "g1"
    )
    assert read["spec"] == {"size": 3}

    # The schema is enforced by the apiserver, not by us.
    bad = {**gadget, "metadata": {"name": "g2", "namespace": namespace}, "spec": {"size": 0}}
    refused = cluster.run_kubectl("apply", "-f", "-", input=json.dumps(bad))
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr
    assert "g2" not in cluster.kubectl("get", "gadgets", "-n", namespace, "-o", "name")


def test_statefulset_pod_runs_on_kwok_and_its_claim_binds(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    labels = {"app": "smoke"}
    apps.create_namespaced_stateful_set(
        namespace,
        client.V1StatefulSet(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1StatefulSetSpec(
                replicas=1,
                service_name="smoke",
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(
                                name="main",
                                image="registry.invalid/never-pulled:1",
                                volume_mounts=[
                                    client.V1VolumeMount(name="data", mount_path="/data")
                                ],
                            )
                        ]
                    ),
                ),
                volume_claim_templates=[
                    client.V1PersistentVolumeClaim(
                        metadata=client.V1ObjectMeta(name="data"),
                        spec=client.V1PersistentVolumeClaimSpec(
                            access_modes=["ReadWriteOnce"],
                            resources=client.V1VolumeResourceRequirements(
                                requests={"storage": "1Gi"}
                            ),
                        ),
                    )
                ],
            ),
        ),
    )

    pod = eventually(lambda: _running(core, namespace, "smoke-0"), "pod smoke-0 Running", 60)
    assert pod.spec.node_name.startswith("kwok-node-")
    claim = core.read_namespaced_persistent_volume_claim("data-smoke-0", namespace)
    eventually(
        lambda: (
            core.read_namespaced_persistent_volume_claim("data-smoke-0", namespace).status.phase
            == "Bound"
        ),
        "claim Bound",
        60,
    )
    claim = core.read_namespaced_persistent_volume_claim("data-smoke-0", namespace)
    assert claim.spec.storage_class_name == "standard"
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.spec.claim_ref.uid == claim.metadata.uid
    assert volume.status.phase == "Bound"
    status = eventually(
        lambda: (
            (s := apps.read_namespaced_stateful_set("smoke", namespace).status)
            and s.ready_replicas == 1
            and s
        ),
        "StatefulSet ready",
        60,
    )
    assert status.ready_replicas == 1


def _running(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    pods = core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}").items
    if pods and pods[0].status.phase == "Running":
        return pods[0]
    return None
