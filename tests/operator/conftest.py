"""Fixtures of the operator tests: a client view of the test namespace, a /health stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.operator.test_operator import Cluster
from tests.support.cluster import LocalCluster
from tests.support.operator import HealthStandIn, health_stand_in


@pytest.fixture
def health() -> Iterator[HealthStandIn]:
    with health_stand_in() as stand_in:
        yield stand_in


@pytest.fixture
def k(wasp_crds: LocalCluster, api_client: client.ApiClient, namespace: str) -> Cluster:
    return Cluster(wasp_crds, api_client, namespace)
