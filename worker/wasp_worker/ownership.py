"""One owner per account: a worker holds its shard's lease before it starts any session.

The lease is a fence, not a flag. In Kubernetes it is a coordination.k8s.io
Lease per shard (`wasp-shard-<name>`), on the model of client-go's leader
election, with D the lease duration, R < D the renew deadline, P the retry period:

- The holder is `held` until R after the START of its last successful renew,
  on its own monotonic clock. That turns false by itself, even while a renew
  call hangs, and the worker's watchdog then stops every session.
- A standby takes over only once it has seen the same record (holder,
  renewTime, resourceVersion) unchanged for D on its own monotonic clock. It
  first saw that record after the renew that wrote it began, so the holder's
  R ran out at least D - R before: the time the holder has to stop.
- Nobody compares another node's timestamps with its own clock: renewTime and
  acquireTime are written for humans. Only clock rates must roughly agree.
- Every apiserver call is bounded (`_request_timeout`, and an asyncio timeout
  around the thread doing it), so a hung call never delays a decision.
- A standby that could not read the lease for D starts counting again when it
  can: after an apiserver outage the holder gets a full D to renew first.

Locally (`wasp dev`, tests) the lease is an exclusive `flock` on
`WORKDIR/worker.lock`, which the kernel releases when the holder dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
# Apiserver calls run on this many threads; the client pools as many connections.
LEASE_THREADS = 2


class Lease(Protocol):
    @property
    def held(self) -> bool:
        """True while this worker may run sessions; turns false by itself at the deadline."""

    @property
    def reason(self) -> str:
        """Why the lease is not held (or the last renew failed), for /ready and logs."""

    def describe(self) -> str: ...

    def remaining_s(self) -> float:
        """Seconds until `held` turns false unless renewed (0 when not held)."""

    async def try_acquire(self) -> bool:
        """Take or renew the lease if possible; bounded in time, never raises."""

    async def release(self) -> None: ...


@dataclass(frozen=True)
class LeaseTiming:
    """D, R and P of the module docstring; R < D and P < R are checked by the config."""

    duration_s: float
    renew_deadline_s: float
    retry_period_s: float

    @property
    def call_timeout_s(self) -> float:
        """One take/renew attempt, all its calls: two fit in a renew deadline."""
        return self.renew_deadline_s / 2


class FileLease:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.reason = "not acquired yet"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def describe(self) -> str:
        return f"lock file {self.path}"

    def remaining_s(self) -> float:
        return math.inf if self.held else 0.0  # the kernel keeps it until we die

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            self.reason = f"cannot open the lock file: {error}"
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # non-blocking: a quick syscall
        except BlockingIOError:
            os.close(fd)
            self.reason = "another process holds the lock"
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self.reason = fd, "held"
        return True

    async def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd, self.reason = None, "released"


Record = tuple[str | None, str | None, str | None]  # holder, renewTime, resourceVersion


class KubeLease:
    def __init__(
        self,
        shard: str,
        namespace: str,
        identity: str,
        timing: LeaseTiming,
        api: client.ApiClient,
    ) -> None:
        self.name = f"wasp-shard-{shard}"
        self.namespace = namespace
        self.identity = identity
        self.timing = timing
        self.reason = "not acquired yet"
        self._api = client.CoordinationV1Api(api)
        # Its own threads: a hung call never waits behind, nor holds up, other work.
        self._pool = ThreadPoolExecutor(max_workers=LEASE_THREADS, thread_name_prefix="lease")
        self._renewed_at: float | None = None  # monotonic START of the last successful renew
        self._seen: Record | None = None
        self._seen_at = 0.0  # monotonic: when `_seen` was first read
        self._read_at = -math.inf  # monotonic: the last successful read

    @property
    def held(self) -> bool:
        return self.remaining_s() > 0

    def remaining_s(self) -> float:
        if self._renewed_at is None:
            return 0.0
        return max(0.0, self._renewed_at + self.timing.renew_deadline_s - time.monotonic())

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def try_acquire(self) -> bool:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timing.call_timeout_s):
                won = await self._attempt()
        except Exception as error:  # hung, refused, conflict, 5xx: `held` runs out by itself
            self.reason = f"apiserver call failed: {type(error).__name__} {error}"[:300]
            return self.held
        if won:
            self._renewed_at, self.reason = started, "held"
        return self.held

    async def _attempt(self) -> bool:
        try:
            lease = await self._call(self._api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            await self._call(self._api.create_namespaced_lease, self.namespace, self._new())
            return True
        now = time.monotonic()  # after the read: later than the write of what it returned
        spec, holder = lease.spec, lease.spec.holder_identity
        duration = max(self.timing.duration_s, spec.lease_duration_seconds or 0)
        record: Record = (holder, str(spec.renew_time), lease.metadata.resource_version)
        if record != self._seen or now - self._read_at > duration:
            self._seen, self._seen_at = record, now
        self._read_at = now
        if holder and holder != self.identity:
            waited = now - self._seen_at
            if waited < duration:
                self._renewed_at = None  # someone else's: certainly not ours
                self.reason = f"held by {holder}: unchanged for {waited:.1f} of {duration:g} s"
                return False
        wall = datetime.now(UTC)  # for humans only
        if holder != self.identity:
            spec.acquire_time = wall
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = math.ceil(self.timing.duration_s)
        spec.renew_time = wall
        # resourceVersion makes this a compare-and-swap: one winner, a 409 for the others.
        await self._call(self._api.replace_namespaced_lease, self.name, self.namespace, lease)
        return True

    def _new(self) -> client.V1Lease:
        wall = datetime.now(UTC)
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                labels={"app.kubernetes.io/part-of": "wasp"},
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=math.ceil(self.timing.duration_s),
                acquire_time=wall,
                renew_time=wall,
                lease_transitions=0,
            ),
        )

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        bound = functools.partial(method, *args, _request_timeout=self.timing.call_timeout_s)
        return await asyncio.get_running_loop().run_in_executor(self._pool, bound)

    async def release(self) -> None:
        """Give the lease back (the sessions are stopped) so a standby need not wait D."""
        self._renewed_at = None
        try:
            async with asyncio.timeout(self.timing.call_timeout_s):
                lease = await self._call(self._api.read_namespaced_lease, self.name, self.namespace)
                if lease.spec.holder_identity == self.identity:
                    lease.spec.holder_identity = None
                    lease.spec.renew_time = None
                    await self._call(
                        self._api.replace_namespaced_lease, self.name, self.namespace, lease
                    )
        except Exception as error:  # any failure: the lease then expires on its own
            self.reason = f"release failed ({type(error).__name__}); expires on its own"
            self._pool.shutdown(wait=False, cancel_futures=True)
            return
        self.reason = "released"
        self._pool.shutdown(wait=False, cancel_futures=True)
