"""The HTTP floor of the store's reads: each probe's SELECTs answered by the least an
aiohttp server can do.

`python -m bench.store_floor_http <database> <statements.json> <port>` serves
`GET /floor/<n>`: probe n's statements run on one read-only sqlite3 connection, right on
the event loop (no thread hop, no validation, no middleware, no auth), and the rows
answered as JSON objects keyed by column name (the shape of the worker's items), encoded
by orjson as the worker's are. Measured by the same client on the same keep-alive terms
as the worker, in the same run: the worker's time over this one is what wasp adds to a
read beyond its SQL, HTTP and JSON.

Two more measures of the transport alone:
- `GET /bytes/<n>`: the same answer's bytes (made once), with no work at all: the least
  any HTTP answer of that size costs this client. Where it exceeds the SQL's own time,
  no server can answer within 2x of the SQL.
- `GET /hop/<n>`: `/floor/<n>` fetched from this same server by a pooled aiohttp client
  and answered as received: the floor of a read that one routing hop stands in front of
  (the master's place), without the master's routing, token check or gathering.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, web

Statement = tuple[str, tuple[Any, ...]]


def app(database: Path, probes: list[list[Statement]], port: int) -> web.Application:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
    answers: dict[int, bytes] = {}
    clients: list[ClientSession] = []

    def answer(n: int) -> bytes:
        results = []
        for sql, args in probes[n]:
            cursor = db.execute(sql, args)
            names = [column[0] for column in cursor.description]
            results.append([dict(zip(names, row, strict=True)) for row in cursor.fetchall()])
        return orjson.dumps({"ok": True, "results": results})

    async def floor(request: web.Request) -> web.Response:
        body = answer(int(request.match_info["n"]))
        return web.Response(body=body, content_type="application/json")

    async def fixed(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n not in answers:
            answers[n] = answer(n)
        return web.Response(body=answers[n], content_type="application/json")

    async def hop(request: web.Request) -> web.Response:
        if not clients:
            clients.append(ClientSession())
        url = f"http://127.0.0.1:{port}/floor/{request.match_info['n']}"
        async with clients[0].get(url) as got:
            body = await got.read()
        return web.Response(body=body, content_type="application/json")

    async def close_clients(_: web.Application) -> None:
        for client in clients:
            await client.close()

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    served = web.Application()
    served.router.add_get("/floor/{n}", floor)
    served.router.add_get("/bytes/{n}", fixed)
    served.router.add_get("/hop/{n}", hop)
    served.on_cleanup.append(close_clients)
    served.router.add_get("/health", health)
    return served


class FloorServer:
    """The floor server as a child process (as the worker is one), its output in `log`."""

    def __init__(self, database: Path, probes: list[list[Statement]], port: int, log: Path):
        spec = log.with_suffix(".json")
        spec.write_text(json.dumps(probes))
        self.port = port
        command = [sys.executable, "-m", "bench.store_floor_http", str(database), str(spec)]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"floor server exited: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        raise RuntimeError("floor server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


if __name__ == "__main__":
    path, spec, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    loaded = [[(sql, tuple(args)) for sql, args in probe] for probe in json.loads(spec.read_text())]
    web.run_app(app(path, loaded, port), host="127.0.0.1", port=port, access_log=None, print=None)
