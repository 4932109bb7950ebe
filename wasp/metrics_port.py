"""/metrics on a port of its own, for the master and the worker alike.

The API port answers the API (and the master's console) only; Prometheus scrapes
this one. Separate ports let a NetworkPolicy open each to its own clients: the
worker's API port to the master, the metrics ports to Prometheus. The operator
does the same with prometheus_client's own server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """GET /metrics of `registry`, and nothing else."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serving_metrics(
    registry: CollectorRegistry, host: str, port: int | None
) -> AsyncIterator[int | None]:
    """Serve `registry` on host:port while inside (yielded: the bound port; None and
    nothing served when `port` is None)."""
    if port is None:
        yield None
        return
    runner = web.AppRunner(metrics_app(registry), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
