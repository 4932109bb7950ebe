"""One owner per account: a worker holds its shard's lease before it starts any session.

- In Kubernetes, a coordination.k8s.io Lease per shard (`wasp-shard-<name>`),
  renewed while held and released on shutdown; a holder that stops renewing
  loses it after `lease_duration_s`, and a worker that fails to renew stops
  its sessions at once. So even two pods for one range never connect an
  account twice.
- Locally (`wasp dev`, tests) an exclusive `flock` on `WORKDIR/worker.lock`,
  which the kernel releases when the holder dies, however it dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


class Lease(Protocol):
    held: bool

    def describe(self) -> str: ...

    async def try_acquire(self) -> bool:
        """Take or renew the lease if possible; never waits for the holder."""

    async def release(self) -> None: ...


class FileLease:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self._fd: int | None = None

    def describe(self) -> str:
        return f"lock file {self.path}"

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # non-blocking: a quick syscall
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self.held = fd, True
        return True

    async def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd, self.held = None, False


class KubeLease:
    def __init__(
        self, shard: str, namespace: str, identity: str, duration_s: int, api: client.ApiClient
    ) -> None:
        self.name = f"wasp-shard-{shard}"
        self.namespace = namespace
        self.identity = identity
        self.duration_s = duration_s
        self.held = False
        self._api = client.CoordinationV1Api(api)

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def try_acquire(self) -> bool:
        self.held = await asyncio.to_thread(self._take)
        return self.held

    def _take(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(now)
        spec = lease.spec
        renewed = spec.renew_time
        expired = (
            renewed is None
            or renewed + timedelta(seconds=spec.lease_duration_seconds or self.duration_s) < now
        )
        if spec.holder_identity not in (None, self.identity) and not expired:
            return False
        if spec.holder_identity != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.duration_s
        spec.renew_time = now
        try:  # resourceVersion makes this a compare-and-swap: one winner
            self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def _create(self, now: datetime) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                labels={"app.kubernetes.io/part-of": "wasp"},
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.duration_s,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._api.create_namespaced_lease(self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def release(self) -> None:
        if self.held:
            await asyncio.to_thread(self._give_up)
            self.held = False

    def _give_up(self) -> None:
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException:
            pass  # it expires on its own


def kube_api() -> Any:
    """The in-cluster client, or the kubeconfig's outside a cluster."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)
