"""Scatter-gather: one read per piece of a cross-shard request, all at once, and
what did not answer said so instead of guessed.

Each piece (`selection.Piece`: one shard's share of the slots asked for) is one
GET of the worker's range endpoint, with the worker token, through the master's
pooled client, bounded by `scatter_timeout_s`. A piece that cannot be read is a
`Missing` with its reason: a suspended shard is not woken for a read across
shards (a listing must not start pods), a shard not Ready is not asked, and one
that is down, slow or answers an error is reported, never retried into a wrong
answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from wasp_master.errors import MasterError, ShardSlow
from wasp_master.selection import Piece
from wasp_master.state import Master

log = logging.getLogger("wasp.master")
Why = Literal["suspended", "not_ready", "timeout", "unreachable", "error"]


@dataclass(frozen=True)
class Missing:
    """A piece the answer lacks, and why."""

    piece: Piece
    reason: str
    why: Why  # the reason's kind, for the metric

    def describe(self) -> dict[str, str]:
        return {
            "shard": self.piece.route.id,
            "from": str(self.piece.slots.first),
            "to": str(self.piece.slots.last),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Read:
    """A piece's answer: the worker's JSON body."""

    piece: Piece
    body: dict[str, Any]


async def _read(
    master: Master, piece: Piece, path: str, params: Mapping[str, str], timeout_s: float
) -> Read | Missing:
    route = piece.route
    if route.suspended:
        return Missing(piece, "suspended: not woken for a read across shards", "suspended")
    if not route.ready:
        return Missing(piece, "not ready", "not_ready")
    started = time.perf_counter()
    status = 503
    try:
        query = {**params, "from": str(piece.slots.first), "to": str(piece.slots.last)}
        status, body = await master.proxy.get_json(route, path, query, timeout_s)
    except MasterError as error:
        why: Why = "timeout" if isinstance(error, ShardSlow) else "unreachable"
        return Missing(piece, error.reason.removeprefix(f"shard {route.id} is unavailable: "), why)
    finally:
        master.metrics.routed(route.id, status, time.perf_counter() - started)
    if status != 200 or not isinstance(body, dict):
        said = body.get("error") if isinstance(body, dict) else None
        return Missing(piece, f"worker answered {status}: {str(said)[:200]}", "error")
    return Read(piece, body)


async def scatter(
    master: Master, pieces: Sequence[Piece], path: str, params: Mapping[str, str]
) -> tuple[list[Read], list[Missing]]:
    """Every piece read at once; the answers in piece order, and what is missing."""
    started = time.perf_counter()
    timeout_s = master.config.scatter_timeout_s
    reading = [_read(master, p, path, params, timeout_s) for p in pieces]
    # One piece (a range one shard holds) is awaited as it is: a task of its own would
    # cost the read another turn of the event loop.
    results = [await reading[0]] if len(reading) == 1 else await asyncio.gather(*reading)
    reads = [r for r in results if isinstance(r, Read)]
    missing = [r for r in results if isinstance(r, Missing)]
    for gap in missing:
        master.metrics.scatter_missing.labels(gap.piece.route.id, gap.why).inc()
    if missing:
        # Only a read that lacks a piece is logged: a whole one is a request like any other
        # (the routed-call metrics count and time each piece), and a line per read would
        # cost the read as much as its merge.
        log.warning(
            json.dumps(
                {
                    "event": "scatter_partial",
                    "path": path,
                    "pieces": len(pieces),
                    # The kind, not the reason: a worker's error text may quote the query.
                    "missing": [{"shard": m.piece.route.id, "why": m.why} for m in missing],
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                }
            )
        )
    return reads, missing


def merge(
    pages: Sequence[Sequence[dict[str, Any]]],
    more: bool,
    key: Callable[[dict[str, Any]], Any],
    reverse: bool,
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """Pages each in `key` order (every shard answered "the first `limit` after the
    cursor") as one page: the first `limit` of them all, and whether more follow (a
    shard said it had more, `more`, or the merge cut some off). Whatever a shard holds
    beyond its page sorts after its page's last item, so after the merged page's last
    item too: that item's key is the one cursor for every shard."""
    items = sorted((item for page in pages for item in page), key=key, reverse=reverse)
    return items[:limit], more or len(items) > limit


def partial(missing: Sequence[Missing]) -> dict[str, Any]:
    """`partial` and `missing` of an answer."""
    return {"partial": bool(missing), "missing": [m.describe() for m in missing]}
