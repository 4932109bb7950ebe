"""The accounts' proxy credentials, written through the master (`/api/proxy-credentials`).

An account's proxy URL is shared config (`accounts.json`); the user name and
password it needs are a secret, kept apart from it where the workers read them:
locally the 0600 file `proxy-credentials.json` beside the config (or the file
`PROXY_CREDENTIALS_FILE` names), in Kubernetes the key `proxy-credentials.json`
of the Secret the webhook signing secrets live in, which every worker mounts.
Each write replaces the whole file with the version read (the Secret's
resourceVersion), so two masters writing at once cannot lose each other's entry:
the second gets a 409. A password never leaves: answers and logs name the slot
and the user name only. A worker applies a change at the slot's next connect.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from wasp.openapi import Route, path_value
from wasp.proxies import Credentials, ProxyCredentials
from wasp.slots import SlotId
from wasp.validation import problems
from wasp_master.errors import BadRequest
from wasp_master.shared_config import Conflict
from wasp_master.state import master_of
from wasp_master.webhook_store import write_atomically

log = logging.getLogger("wasp.master")

KEY = "proxy-credentials.json"  # the file's name, and its key in the Secret
PATH = "/api/proxy-credentials"
BySlot = dict[str, Credentials]


def _parse(text: str | None) -> BySlot:
    if not text:
        return {}
    return {
        str(slot): found for slot, found in ProxyCredentials.model_validate_json(text).root.items()
    }


def _dump(entries: BySlot) -> str:
    return json.dumps({slot: found.model_dump() for slot, found in sorted(entries.items())})


class CredentialStore(Protocol):
    async def read(self) -> BySlot: ...

    async def put(self, slot: str, credentials: Credentials | None) -> bool:
        """Set (or, with None, remove) one slot's entry; whether there was one before."""


class FileCredentialStore:
    """`proxy-credentials.json` (0600) in the config folder, or the file given."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def read(self) -> BySlot:
        return await asyncio.to_thread(self._read)

    def _read(self) -> BySlot:
        return _parse(self.path.read_text() if self.path.exists() else None)

    async def put(self, slot: str, credentials: Credentials | None) -> bool:
        async with self._lock:
            return await asyncio.to_thread(self._put, slot, credentials)

    def _put(self, slot: str, credentials: Credentials | None) -> bool:
        entries = self._read()
        existed = entries.pop(slot, None) is not None
        if credentials is not None:
            entries[slot] = credentials
        write_atomically(self.path, _dump(entries), 0o600)
        return existed


class SecretCredentialStore:
    """The key `proxy-credentials.json` of a Secret, replaced with the resourceVersion read."""

    def __init__(self, api: client.ApiClient, namespace: str, secret: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.secret = namespace, secret

    async def _secret(self) -> Any:
        return await asyncio.to_thread(
            self.core.read_namespaced_secret, self.secret, self.namespace
        )

    @staticmethod
    def _entries(secret: Any) -> BySlot:
        raw = (secret.data or {}).get(KEY)
        return _parse(base64.b64decode(raw).decode() if raw else None)

    async def read(self) -> BySlot:
        return self._entries(await self._secret())

    async def put(self, slot: str, credentials: Credentials | None) -> bool:
        secret = await self._secret()
        entries = self._entries(secret)
        existed = entries.pop(slot, None) is not None
        if credentials is not None:
            entries[slot] = credentials
        secret.data = {
            **(secret.data or {}),
            KEY: base64.b64encode(_dump(entries).encode()).decode(),
        }
        try:  # the object read carries its resourceVersion: a write between is a 409
            await asyncio.to_thread(
                self.core.replace_namespaced_secret, self.secret, self.namespace, secret
            )
        except ApiException as error:
            if error.status == 409:
                raise Conflict("proxy credentials changed meanwhile; retry") from None
            raise
        return existed


def _public(slot: str, found: Credentials) -> dict[str, str]:
    return {"slot": slot, "username": found.username}


async def read_credentials(request: web.Request) -> web.Response:
    entries = await master_of(request).proxy_credentials.read()
    return web.json_response(
        {"ok": True, "credentials": [_public(s, c) for s, c in sorted(entries.items())]}
    )


async def write_credentials(request: web.Request) -> web.Response:
    slot = str(path_value(request, "slot", SlotId))
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("body is not JSON") from None
    try:
        credentials = Credentials.model_validate(data)
    except ValidationError as error:  # `problems` names fields and rules, never the values
        raise BadRequest(f"invalid proxy credentials: {problems(error, limit=5)}") from None
    replaced = await master_of(request).proxy_credentials.put(slot, credentials)
    log.info(json.dumps({"event": "proxy_credentials_written", "slot": slot, "replaced": replaced}))
    return web.json_response({"ok": True, **_public(slot, credentials), "replaced": replaced})


async def remove_credentials(request: web.Request) -> web.Response:
    slot = str(path_value(request, "slot", SlotId))
    removed = await master_of(request).proxy_credentials.put(slot, None)
    log.info(json.dumps({"event": "proxy_credentials_removed", "slot": slot, "removed": removed}))
    return web.json_response({"ok": True, "slot": slot, "removed": removed})


ROUTES = [
    Route(
        "GET",
        PATH,
        read_credentials,
        "Slots with proxy credentials, and their user names (never a password)",
        name="proxyCredentials",
    ),
    Route(
        "PUT",
        PATH + "/{slot}",
        write_credentials,
        "Set a slot's proxy user name and password (kept in a Secret, used from the slot's "
        "next connect)",
        body=Credentials,
        params={"slot": SlotId},
        responses=(200, 400, 409, 413),
        name="setProxyCredentials",
    ),
    Route(
        "DELETE",
        PATH + "/{slot}",
        remove_credentials,
        "Remove a slot's proxy credentials",
        params={"slot": SlotId},
        responses=(200, 400, 409),
        name="removeProxyCredentials",
    ),
]
