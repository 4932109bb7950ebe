"""Kubernetes credentials shared by the operator, the master and the worker (its lease).

One factory builds every kubernetes client, in a pod or from a kubeconfig; the
operator and the master also hand the same configuration to their kopf watches.
"""

from __future__ import annotations

from pathlib import Path

import kopf
from kubernetes import client
from kubernetes import config as kube_config


def api_client(kubeconfig: Path | None, pool_size: int = 32) -> client.ApiClient:
    """The in-cluster config in a pod, else the given or default kubeconfig."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        kube_config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    else:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException:
            kube_config.load_kube_config(client_configuration=configuration)
    # Calls run concurrently in threads; one pooled connection per thread.
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration the rest of the program uses."""
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
