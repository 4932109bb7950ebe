"""One owner per account: a worker holds its shard's lease before it starts any session.

Locally (`wasp dev`, tests) the lease is an exclusive `flock` on `WORKDIR/worker.lock`:
the kernel releases it when the holder dies, however it dies, so a second
worker for the same range waits and takes over. (In Kubernetes the same role
falls to a coordination.k8s.io Lease; not built yet.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class FileLease:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if free; never blocks."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
