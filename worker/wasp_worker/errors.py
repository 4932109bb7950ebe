"""Typed errors of the worker; its middleware answers them with `wasp.errors.error_response`."""

from __future__ import annotations

from wasp.errors import ApiError


class WorkerError(ApiError):
    """An error of the worker's own; the message is its `reason`."""

    status = 400


class BadRequest(WorkerError):
    status = 400


class NotFound(WorkerError):
    status = 404


class SlotNotInWorker(WorkerError):
    status = 409

    def __init__(self) -> None:
        super().__init__("slot not in this worker")


class Conflict(WorkerError):
    """The request does not fit the session's current state (the message says which)."""

    status = 409


class Gone(WorkerError):
    """A position the server no longer keeps (a sync cursor below the change log's horizon)."""

    status = 410


class CapacityFull(WorkerError):
    status = 429

    def __init__(self) -> None:
        super().__init__("worker capacity full")


class NoSession(WorkerError):
    status = 404

    def __init__(self, slot: str) -> None:
        super().__init__(f"no session for slot {slot}: connect it first")


class NotOwner(WorkerError):
    status = 503

    def __init__(self, where: str) -> None:
        super().__init__(
            f"another worker holds this shard's lease ({where}); this one waits to take over"
        )


class TooLarge(WorkerError):
    """A file over its kind's limit (the message names the limit)."""

    status = 413


class UnsupportedType(WorkerError):
    """A file of a type its kind does not take (the message lists the accepted types)."""

    status = 415


class Unprocessable(WorkerError):
    """A body the document accepts but whose values do not fit together (the message says why)."""

    status = 422


class NotSupported(WorkerError):
    """The session's backend cannot do this operation (the message names both)."""

    status = 501
