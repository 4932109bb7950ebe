"""Where the webhook subscriptions and their secrets are kept.

The subscriptions are shared config like accounts and roles: `webhooks.json`
in CONFIGDIR (locally a file, in Kubernetes a key of the shared ConfigMap).
Their signing secrets are kept apart: locally a 0600 file beside the config
(`webhook-secrets.json`), in Kubernetes a Secret. Both are written with the
version read, so two masters editing at once cannot overwrite each other.

A write stores the secrets first, keeping those the document still names,
then the document, then drops the secrets nobody names: a crash between two
steps never leaves a subscription without its secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from wasp.webhooks import WebhooksDocument
from wasp_master.shared_config import Conflict

DOCUMENT = "webhooks.json"
SECRETS = "webhook-secrets.json"

Secrets = dict[str, str]  # subscription id -> whsec_ secret


class WebhookStore(Protocol):
    async def read(self) -> tuple[WebhooksDocument, Secrets]: ...

    async def write(self, document: WebhooksDocument, secrets: Secrets) -> None: ...


def _document(text: str | None) -> WebhooksDocument:
    return WebhooksDocument.model_validate_json(text or "{}")


def _secrets(text: str | None) -> Secrets:
    data = json.loads(text or "{}")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Replace the file in one rename, its data and the rename on disk when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class DirectoryWebhookStore:
    """`<config>/webhooks.json` (0644) and the secrets file (0600, by default beside it)."""

    def __init__(self, directory: Path, secrets_file: Path | None = None) -> None:
        self.document = directory / DOCUMENT
        self.secrets = secrets_file or directory / SECRETS
        self._lock = asyncio.Lock()

    async def read(self) -> tuple[WebhooksDocument, Secrets]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> tuple[WebhooksDocument, Secrets]:
        document = self.document.read_text() if self.document.exists() else None
        secrets = self.secrets.read_text() if self.secrets.exists() else None
        return _document(document), _secrets(secrets)

    async def write(self, document: WebhooksDocument, secrets: Secrets) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write, document, secrets)

    def _write(self, document: WebhooksDocument, secrets: Secrets) -> None:
        before = self._read()[1]
        kept = {k: v for k, v in before.items() if k not in secrets}
        write_atomically(self.secrets, json.dumps({**kept, **secrets}), 0o600)
        write_atomically(self.document, document.model_dump_json(indent=2), 0o644)
        write_atomically(self.secrets, json.dumps(secrets), 0o600)


class KubeWebhookStore:
    """`webhooks.json` in the shared ConfigMap, the secrets in a Secret (key
    `webhook-secrets.json`); each replaced with the resourceVersion read."""

    def __init__(self, api: client.ApiClient, namespace: str, config_map: str, secret: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.config_map, self.secret = namespace, config_map, secret

    async def read(self) -> tuple[WebhooksDocument, Secrets]:
        config_map = await asyncio.to_thread(
            self.core.read_namespaced_config_map, self.config_map, self.namespace
        )
        secret = await self._read_secret()
        return _document((config_map.data or {}).get(DOCUMENT)), self._decode(secret)

    async def _read_secret(self) -> Any:
        return await asyncio.to_thread(
            self.core.read_namespaced_secret, self.secret, self.namespace
        )

    @staticmethod
    def _decode(secret: Any) -> Secrets:
        raw = (secret.data or {}).get(SECRETS)
        return _secrets(base64.b64decode(raw).decode() if raw else None)

    async def _replace_secret(self, secrets: Secrets, merge: bool) -> None:
        secret = await self._read_secret()
        if merge:
            secrets = {**self._decode(secret), **secrets}
        encoded = base64.b64encode(json.dumps(secrets).encode()).decode()
        secret.data = {**(secret.data or {}), SECRETS: encoded}
        await self._replace(self.core.replace_namespaced_secret, self.secret, secret)

    async def _replace(self, call: Any, name: str, body: Any) -> None:
        try:
            await asyncio.to_thread(call, name, self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                raise Conflict("webhooks changed meanwhile; read them again and retry") from None
            raise

    async def write(self, document: WebhooksDocument, secrets: Secrets) -> None:
        await self._replace_secret(secrets, merge=True)
        config_map = await asyncio.to_thread(
            self.core.read_namespaced_config_map, self.config_map, self.namespace
        )
        config_map.data = {**(config_map.data or {}), DOCUMENT: document.model_dump_json(indent=2)}
        await self._replace(self.core.replace_namespaced_config_map, self.config_map, config_map)
        await self._replace_secret(secrets, merge=False)
