"""The HTTP side of presence: the account shows typing or recording in a chat
(`setPresence`), and opening a chat subscribes to its peer's (`presence.PresenceWatch`)."""

from __future__ import annotations

from aiohttp import web

from wasp.messages import Destination, normalise
from wasp.openapi import path_value
from wasp.presence import PresenceRequest
from wasp.slots import Slot
from wasp_worker.http_support import Handler, read_body
from wasp_worker.presence import PresenceWatch
from wasp_worker.state import SESSIONS

PRESENCE = web.AppKey("presence", PresenceWatch)


def chat_opened(request: web.Request, slot: Slot, chat_id: str) -> None:
    """The agent opened the chat (openChat, its messages page): watch its presence."""
    watch = request.app.get(PRESENCE)
    if watch is not None:
        watch.chat_opened(slot, chat_id)


async def set_presence(request: web.Request) -> web.Response:
    """Show the account typing, recording or paused in a chat, now (never queued)."""
    slot = request.app[SESSIONS].own(request.match_info["slot"])
    chat_id = normalise(path_value(request, "chat_id", Destination))
    body = await read_body(request, PresenceRequest)
    await request.app[PRESENCE].send(slot, chat_id, body.state)
    return web.json_response(
        {"ok": True, "slot": str(slot), "chat_id": chat_id, "state": body.state}
    )


PRESENCE_HANDLERS: dict[str, Handler] = {"setPresence": set_presence}
