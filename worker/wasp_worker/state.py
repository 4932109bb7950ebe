"""What the worker's parts share, by key on the aiohttp application.

The composition root (`app.build_app`) puts each object here once; the HTTP
handlers, the lease loop and the warm-up read them from the application.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from wasp_worker.config import WorkerConfig
from wasp_worker.conversations import Conversations
from wasp_worker.events import EventLog
from wasp_worker.history import History
from wasp_worker.live_feed import LiveFeed
from wasp_worker.outbound import OutboundRunner
from wasp_worker.queue import OutboundQueue
from wasp_worker.sessions import SessionManager
from wasp_worker.settings_sender import SettingsSender
from wasp_worker.webhooks.service import Webhooks

SESSIONS = web.AppKey("sessions", SessionManager)
CONFIG = web.AppKey("config", WorkerConfig)
LOG = web.AppKey("log", EventLog)
METRICS = web.AppKey("metrics", CollectorRegistry)
QUEUE = web.AppKey("queue", OutboundQueue)
RUNNER = web.AppKey("runner", OutboundRunner)
HISTORY = web.AppKey("history", History)
CONVERSATIONS = web.AppKey("conversations", Conversations)
FEED = web.AppKey("feed", LiveFeed)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
SETTINGS = web.AppKey("settings", SettingsSender)
BACKGROUND = web.AppKey("background", list[asyncio.Task[Any]])
