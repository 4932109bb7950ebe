"""Fixtures of the operator tests: a client view of the test namespace."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.operator.test_operator import Cluster
from tests.support.cluster import LocalCluster


@pytest.fixture
def k(wasp_crds: LocalCluster, api_client: client.ApiClient, namespace: str) -> Cluster:
    return Cluster(wasp_crds, api_client, namespace)
