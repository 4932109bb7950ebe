"""A webhook receiver for `bench.webhooks`, in a process of its own so it does not
share the deliverer's event loop: aiohttp on 127.0.0.1, answering 204 at once.

It reads the monotonic clock (one clock for every process on the machine) as
each request arrives and keeps it by `webhook-id`; every `verify_every`-th
request has its signature checked with the official library, and a bad one is
counted. `GET /arrivals` answers what it has: `{"count", "verified", "bad", "at":
{id: t}}`.

    python -m bench.webhook_receiver PORT SECRET VERIFY_EVERY
"""

from __future__ import annotations

import sys
import time

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def app(secret: str, verify_every: int) -> web.Application:
    hook = Webhook(secret)
    arrivals: dict[str, float] = {}
    bad = verified = seen = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal bad, verified, seen
        at = time.monotonic()
        body = await request.read()
        seen += 1
        if verify_every and seen % verify_every == 0:
            verified += 1
            try:
                hook.verify(body, dict(request.headers))
            except WebhookVerificationError:
                bad += 1
        arrivals.setdefault(request.headers["webhook-id"], at)
        return web.Response(status=204)

    async def report(request: web.Request) -> web.Response:
        return web.json_response(
            {"count": len(arrivals), "verified": verified, "bad": bad, "at": arrivals}
        )

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"count": len(arrivals), "requests": seen})

    application = web.Application()
    application.router.add_post("/hook", receive)
    application.router.add_get("/arrivals", report)
    application.router.add_get("/count", count)
    return application


if __name__ == "__main__":
    port, secret, verify_every = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    web.run_app(app(secret, verify_every), host="127.0.0.1", port=port, print=None)
