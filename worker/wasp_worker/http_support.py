"""What the worker's HTTP handlers share: reading a JSON body with its model, and
sending WhatsApp the read receipts of messages just marked read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from wasp.slots import Slot
from wasp.validation import problems
from wasp_worker.errors import BadRequest
from wasp_worker.state import LOG, SESSIONS

Body = TypeVar("Body", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """Parse and validate a JSON body; anything else is a 400 that says why."""
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("body is not JSON") from None
    return validated(data, model)


def validated(data: object, model: type[Body]) -> Body:
    """Parsed JSON as `model`, or a 400 that says why."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadRequest(f"invalid request: {problems(error, tags=_tags(model))}") from None


@cache
def _tags(model: type[BaseModel]) -> frozenset[str]:
    """The `type` values of a body that is a discriminated union (none for other bodies)."""
    return frozenset(model.model_json_schema().get("discriminator", {}).get("mapping", {}))


async def send_read_receipts(
    app: web.Application, slot: Slot, chat_id: str, unread: dict[str | None, list[str]]
) -> str:
    """Read receipts for what was unread: `sent`, `none` (nothing was unread), or why not
    (`not_connected`, `failed`); the messages stay read here either way."""
    if not unread:
        return "none"
    sessions = app[SESSIONS]
    state = sessions.states.get(slot)
    if state is None or state.status != "CONNECTED":
        return "not_connected"
    try:
        for sender, ids in unread.items():
            await sessions.backend.mark_read(slot, chat_id, sender, ids)
    except Exception as error:
        app[LOG].emit("read_receipts_failed", slot=str(slot), error=type(error).__name__)
        return "failed"
    return "sent"
