"""Who may call what: API keys on /api/* and Socket.IO, the master token on /internal/*.

Two steps, both before a request is routed, so nothing reaches a worker for a
refused key: `authenticate` finds the presented key's record (401 if none),
`authorize` checks it against what the request needs: an operation and, for a
slot, the key's workspaces or slot ranges (403 naming what is missing). The
operation each route needs is a table next to the routes (`app.ACCESS`).

Keys are compared as hashes, in constant time, against every record; none is
ever logged. With no keys configured the API is open (local `wasp dev`), and
the master says so in its start-up log.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from wasp.slots import Slot, SlotError, SlotRange
from wasp_master.errors import BadRequest, Forbidden, Unauthorized
from wasp_master.keys import KeyRecord, KeyRing, Operation

# What an open master (no keys configured) acts as: everything, like before keys had scopes.
OPEN = KeyRecord(id="open", hash="sha256:" + "0" * 64, operations=("admin",))


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`x-api-key: <key>` or `Authorization: Bearer <key>`."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return None


def authenticate(given: str | None, ring: KeyRing) -> KeyRecord:
    if ring.open:
        return OPEN
    if not given:
        raise Unauthorized("missing API key: send it as `x-api-key` or `Authorization: Bearer`")
    record = ring.find(given)
    if record is None:
        raise Unauthorized("invalid API key")
    return record


def authorize(
    key: KeyRecord, operation: Operation, slot: Slot | None = None, workspace: str = "default"
) -> None:
    """Refuse (403) unless the key allows the operation, on this slot if one is named."""
    if not key.allows(operation):
        raise Forbidden(
            f"key {key.id!r} may not {operation}: it allows {', '.join(key.operations)}"
        )
    if slot is None or key.covers(slot, workspace):
        return
    if key.slots is not None:
        raise Forbidden(f"slot {slot} is outside key {key.id!r}'s {key.scope()}")
    raise Forbidden(
        f"slot {slot} is in workspace {workspace!r}, outside key {key.id!r}'s {key.scope()}"
    )


def slot_for(key: KeyRecord, text: str | None) -> Slot | None:
    """The slot a request names, parsed only when the key's scope depends on it
    (unscoped, a bad slot is the route's 400 as before)."""
    if text is None or key.unrestricted:
        return None
    try:
        return Slot.parse(text)
    except SlotError as error:
        raise BadRequest(str(error)) from None


def visible(
    key: KeyRecord, kind: str, items: list[dict[str, Any]], workspace_of: Callable[[str], str]
) -> list[dict[str, Any]]:
    """What a scoped key sees of a shared-config list: accounts by their slot and
    `ws`, roles by `boundSlot`; groups belong to no slot, so they are refused."""
    if key.unrestricted:
        return items
    field = {"accounts": "slot", "roles": "boundSlot"}.get(kind)
    if field is None:
        raise Forbidden(f"{kind} belong to no slot: key {key.id!r} is scoped to {key.scope()}")

    def seen(item: dict[str, Any]) -> bool:
        try:
            slot = Slot.parse(item.get(field))
        except SlotError:
            return False
        workspace = str(item.get("ws") or "default") if kind == "accounts" else None
        return key.covers(slot, workspace or workspace_of(str(slot)))

    return [item for item in items if seen(item)]


def authorize_join(key: KeyRecord, everything: bool, workspace: str | None) -> None:
    """Socket.IO rooms: `all` needs an unscoped key, `ws:<name>` that workspace.

    Live events go to the room `all` and to their workspace's room; a key scoped
    to slot ranges matches neither exactly, so it may join no room."""
    authorize(key, "read")
    if key.slots is not None:
        raise Forbidden(
            f"key {key.id!r} is scoped to {key.scope()}: live events are delivered by "
            "workspace, so only an unscoped or workspace-scoped key may join"
        )
    if everything and not key.unrestricted:
        raise Forbidden(f"room `all` needs an unscoped key; key {key.id!r} has {key.scope()}")
    if workspace is not None and not key.unrestricted and workspace not in (key.workspaces or ()):
        raise Forbidden(f"workspace {workspace!r} is outside key {key.id!r}'s {key.scope()}")


def check_master_token(given: str | None, token: str) -> None:
    if not token:
        return
    if not given:
        raise Unauthorized("missing x-master-token")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("invalid x-master-token")


def sees_shard(key: KeyRecord, shard: SlotRange, workspaces: Mapping[str, str]) -> bool:
    """A slot-scoped key sees the shards its ranges overlap; a workspace-scoped key
    those holding an account of its workspaces, and every shard if it has `default`
    (the workspace of slots no account lists)."""
    if key.workspaces is None:
        return key.overlaps(shard)
    if "default" in key.workspaces:
        return True
    for slot, ws in workspaces.items():
        if ws in key.workspaces:
            with contextlib.suppress(SlotError):  # a hand-edited accounts file
                if Slot.parse(slot) in shard:
                    return True
    return False
