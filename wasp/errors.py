"""The error both APIs answer with, and the one way it becomes an HTTP answer.

The master and the worker raise typed errors (their own subclasses, named for
their status); each program's middleware catches `ApiError` and answers with
`error_response`, so every error of either API is `{"ok": false, "error"}`
with the status and headers the error carries.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An error a client caused or can act on; `status`, `reason` and `headers` make the answer."""

    status = 500
    closes_connection = False  # the request's framing cannot be trusted: no next request

    def __init__(self, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.reason}


def error_response(error: ApiError) -> web.Response:
    """The HTTP answer of a typed error, the same in the master and the worker."""
    answer = web.json_response(error.body(), status=error.status, headers=error.headers)
    if error.closes_connection:
        answer.force_close()
    return answer
