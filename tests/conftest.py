"""Fixtures shared by all tests: the real loopback cluster and a namespace per test."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.support.cluster import ROOT, LocalCluster
from wasp.contract import CRD


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The loopback control plane: reused if `make cluster-up` started it, else started here."""
    local = LocalCluster()
    started_here = not local.is_up()
    if started_here:
        local.up()
    yield local
    if started_here:
        local.down()


@pytest.fixture(scope="session")
def api_client(cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(
    cluster: LocalCluster, api_client: client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace for one test, with its default ServiceAccount ready."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"wasp.dev/test": "true"})
        )
    )
    # Pods are refused until the controller-manager has made the default account.
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(
        name, field_selector="metadata.name=default"
    ).items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name}: no default ServiceAccount after 30 s")
        time.sleep(0.1)
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def wasp_crds(cluster: LocalCluster) -> LocalCluster:
    """The cluster with wasp's CRDs (crds/) applied and established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{CRD.crd_name}",
        "crd/kopfpeerings.kopf.dev",
        "crd/clusterkopfpeerings.kopf.dev",
    )
    return cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts or uses the loopback control plane is a `cluster` test,
    whether or not its module says so: `-m "not cluster"` must never start one."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
