"""The master's typed errors; one middleware turns them into `{"ok": false, "error"}` bodies."""

from __future__ import annotations

from typing import Any


class MasterError(Exception):
    status = 500
    closes_connection = False  # the request's framing cannot be trusted: no next request

    def __init__(self, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.reason}


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
