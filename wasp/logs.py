"""Logs an operator can query: one JSON object per line, with an `event` name, in all
three programs.

wasp's own code logs events as JSON objects already (`{"event": "lease_lost", ...}`);
their fields are kept at the top level. Lines from libraries (aiohttp's server
errors, kopf's handler reports, python-socketio) get the logger's name as their
`event` and their text as `message`. A traceback goes inside the object, never
on lines of its own. HTTP access lines, when asked for, are JSON too
(`JsonAccessLogger`): method, path without its query, status, duration; never
headers, so never a key or a token.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

# Libraries whose INFO lines are per request or per object: their warnings stay.
CHATTY = ("aiohttp.access", "kopf.objects", "socketio", "engineio", "asyncio")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.getMessage()
        own = _json_object(message)
        if own is not None:
            entry.update(own)
        else:
            entry["event"] = record.name
            entry["message"] = message
        reference = getattr(record, "k8s_ref", None)  # kopf: the object a line is about
        if isinstance(reference, dict):
            entry["object"] = {k: reference.get(k) for k in ("kind", "namespace", "name")}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["traceback"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _json_object(message: str) -> dict[str, Any] | None:
    if not message.startswith("{"):
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and "event" in parsed else None


def setup(level: int = logging.INFO) -> None:
    """Every logger of the process writes JSON lines to stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp's access log as events (`http_access`), at INFO on `aiohttp.access`."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            json.dumps(
                {
                    "event": "http_access",
                    "method": request.method,
                    "path": request.path[:256],
                    "status": response.status,
                    "ms": round(time * 1000, 2),
                    "remote": request.remote,
                }
            )
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
