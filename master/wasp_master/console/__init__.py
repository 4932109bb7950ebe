"""The web console the master serves at `/`: static files, no build step.

`index.html`, `app.js` and `style.css` sit beside this module with the
Socket.IO browser client (vendored from npm `socket.io-client`, MIT, its
license header kept). The page talks to the master's own API and Socket.IO
endpoint, so it needs nothing else: no CDN, no framework, no bundler.
Only the files named here are served; nothing else in the folder is reachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from aiohttp import web
from pydantic import WithJsonSchema

from wasp.openapi import Route

HERE = Path(__file__).parent
ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "socketio-client.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
ConsoleFile = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(ASSETS)})]
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate (ETag) so an upgrade shows at once


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(HERE / "index.html", headers={**NO_CACHE, "Content-Type": "text/html"})


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = ASSETS.get(name)
    if kind is None:
        return web.json_response({"ok": False, "error": f"no console file {name[:64]}"}, status=404)
    return web.FileResponse(HERE / name, headers={**NO_CACHE, "Content-Type": kind})


CONSOLE_ROUTES = [
    Route("GET", "/", index, "The web console (HTML)"),
    Route(
        "GET",
        "/console/{name}",
        asset,
        "The console's scripts and styles",
        params={"name": ConsoleFile},
        responses=(200, 404),
    ),
]
