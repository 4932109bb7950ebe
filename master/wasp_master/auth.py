"""Who may call what: API keys on /api/* and Socket.IO, the master token on /internal/*.

Keys are compared in constant time against every configured key; none of them
is ever logged. With no API keys configured the API is open (local `wasp dev`),
and the master says so in its start-up log.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from wasp_master.errors import Unauthorized


def _matches(given: str, accepted: tuple[str, ...]) -> bool:
    found = False
    for key in accepted:  # no early exit: timing does not tell which key matched
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`x-api-key: <key>` or `Authorization: Bearer <key>`."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return None


def check_api_key(given: str | None, accepted: tuple[str, ...]) -> None:
    if not accepted:
        return
    if not given:
        raise Unauthorized("missing API key: send it as `x-api-key` or `Authorization: Bearer`")
    if not _matches(given, accepted):
        raise Unauthorized("invalid API key")


def check_master_token(given: str | None, token: str) -> None:
    if not token:
        return
    if not given:
        raise Unauthorized("missing x-master-token")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("invalid x-master-token")
