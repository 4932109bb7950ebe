"""The master's typed errors; its middleware answers them with `wasp.errors.error_response`."""

from __future__ import annotations

from wasp.errors import ApiError


class MasterError(ApiError):
    """An error of the master's own (a worker's errors reach clients as the worker wrote them)."""


class BadRequest(MasterError):
    status = 400


class BadFraming(BadRequest):
    closes_connection = True


class Unauthorized(MasterError):
    status = 401


class Forbidden(MasterError):
    """A valid key asked for something outside its scope; the reason names what is missing."""

    status = 403


class NoShard(MasterError):
    status = 404

    def __init__(self, slot: str) -> None:
        super().__init__(f"no shard serves slot {slot}")


class ShardDown(MasterError):
    """The shard's worker cannot answer now; a retry later may work."""

    status = 503

    def __init__(self, shard: str, why: str, retry_after_s: int = 5) -> None:
        super().__init__(
            f"shard {shard} is unavailable: {why}", {"Retry-After": str(retry_after_s)}
        )


class ShardSlow(ShardDown):
    """The shard's worker did not answer within the time the master gives it."""
