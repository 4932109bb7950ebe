"""What one master process holds, and how a request handler reaches it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import socketio
from aiohttp import web

from wasp_master import auth
from wasp_master.config import MasterConfig
from wasp_master.keys import KeyRecord, KeyRing
from wasp_master.live import EventHub
from wasp_master.metrics import MasterMetrics
from wasp_master.proxy import Proxy
from wasp_master.shards import ShardDirectory
from wasp_master.shared_config import ConfigStore
from wasp_master.wake import Waker
from wasp_master.webhook_store import WebhookStore

if TYPE_CHECKING:  # the credentials' handlers reach the master through this module
    from wasp_master.proxy_credentials import CredentialStore

log = logging.getLogger("wasp.master")


@dataclass
class ShardHealth:
    running: bool = False
    active: int | None = None
    max_active: int | None = None


@dataclass
class Master:
    """Everything one master process holds; handlers reach it through the app."""

    config: MasterConfig
    directory: ShardDirectory
    store: ConfigStore
    metrics: MasterMetrics
    proxy: Proxy
    waker: Waker
    sio: socketio.AsyncServer
    keys: KeyRing
    webhooks: WebhookStore
    proxy_credentials: CredentialStore
    hub: EventHub = field(init=False)
    health: dict[str, ShardHealth] = field(default_factory=dict)
    workspaces: dict[str, str] = field(default_factory=dict)  # slot -> ws, from accounts.json
    sockets: dict[str, KeyRecord] = field(default_factory=dict)  # Socket.IO sid -> its key

    def __post_init__(self) -> None:
        self.hub = EventHub(self.sio, self.directory, self.metrics, self.workspace_of)

    def workspace_of(self, slot: str) -> str:
        return self.workspaces.get(slot, "default")

    async def drop_revoked(self) -> None:
        """After the keys changed: disconnect Socket.IO clients whose key record is gone
        or different (revoked, rotated or rescoped); they reconnect with a current key."""
        current = set(self.keys.records)
        for sid, key in list(self.sockets.items()):
            if key not in current and key is not auth.OPEN:
                await self.sio.disconnect(sid)

    async def refresh_workspaces(self) -> None:
        """Which workspace each slot is in, from accounts.json. On failure the last good
        map stays (events keep their rooms) and the failure is logged, never hidden."""
        try:
            accounts = await self.store.read("accounts")
        except Exception as error:  # any store failure: keep serving with the last map
            log.warning(
                json.dumps(
                    {
                        "event": "workspaces_refresh_failed",
                        "error": type(error).__name__,
                        "reason": str(error)[:200],
                    }
                )
            )
            return
        self.workspaces = {
            str(a.get("slot")): str(a.get("ws") or "default") for a in accounts if a.get("slot")
        }


MASTER = web.AppKey("master", Master)
KEY = web.RequestKey("key", KeyRecord)


def master_of(request: web.Request) -> Master:
    return request.app[MASTER]
