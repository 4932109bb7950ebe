"""The shared config (accounts, roles, groups) the master serves and edits.

Workers read it from CONFIGDIR (warm-up uses roles' `boundSlot` and accounts'
`enabled`). Locally it is a directory of JSON files, written atomically
(temporary file, fsync, rename). In Kubernetes it is a ConfigMap mounted into
every pod; the master writes it through the API with the resourceVersion it
read, so two masters editing at once cannot overwrite each other.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from wasp.proxies import ProxyUrl
from wasp.slots import SlotId
from wasp.validation import JsonInt, problems
from wasp_master.errors import BadRequest, MasterError

Kind = Literal["accounts", "roles", "groups"]
KINDS: tuple[Kind, ...] = ("accounts", "roles", "groups")


class Account(BaseModel):
    """One WhatsApp account: its slot, whether warm-up may start it, its workspace, the
    proxy its session connects through (credentials are never part of it)."""

    model_config = ConfigDict(extra="allow", strict=True)

    slot: SlotId
    enabled: bool = True
    ws: str = Field("default", min_length=1, max_length=128, description="Socket.IO room.")
    # Unset is left out of the stored document, as before proxies existed.
    proxy: ProxyUrl | None = Field(None, exclude_if=lambda value: value is None)


class Role(BaseModel):
    """A CRM role; `boundSlot` is the account it works through (warm-up starts those)."""

    model_config = ConfigDict(extra="allow", strict=True)

    boundSlot: SlotId | None = None


class Group(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    id: str | JsonInt


class Accounts(RootModel[list[Account]]):
    """Body of PUT /api/accounts: the whole list; each slot at most once."""


class Roles(RootModel[list[Role]]):
    """Body of PUT /api/roles: the whole list."""


class Groups(RootModel[list[Group]]):
    """Body of PUT /api/groups: the whole list."""


# The models the master validates a write with, and documents it with.
LISTS: dict[Kind, type[RootModel[Any]]] = {"accounts": Accounts, "roles": Roles, "groups": Groups}


class Conflict(MasterError):
    status = 409


def validate(kind: Kind, data: Any) -> list[dict[str, Any]]:
    """The document as stored, or BadRequest with every problem named.

    A slot listed twice is a 409: no JSON Schema can say "unique by slot", so a
    list the document calls valid may still contradict itself.
    """
    try:
        items = LISTS[kind].model_validate(data).root
    except ValidationError as error:
        raise BadRequest(f"invalid {kind}: {problems(error, limit=10)}") from None
    dumped: list[dict[str, Any]] = [item.model_dump(mode="json") for item in items]
    if kind == "accounts":
        counted = Counter(a["slot"] for a in dumped)
        twice = sorted(slot for slot, seen in counted.items() if seen > 1)
        if twice:
            raise Conflict(f"invalid accounts: slot {', '.join(twice)} listed more than once")
    return dumped


class ConfigStore(Protocol):
    async def read(self, kind: Kind) -> list[dict[str, Any]]: ...

    async def write(self, kind: Kind, items: list[dict[str, Any]]) -> None: ...


class DirectoryStore:
    """`<dir>/<kind>.json` files; a write replaces the file in one rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = asyncio.Lock()

    async def read(self, kind: Kind) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._read, kind)

    def _read(self, kind: Kind) -> list[dict[str, Any]]:
        path = self.directory / f"{kind}.json"
        if not path.exists():
            return []
        data = json.loads(path.read_text() or "[]")
        return data if isinstance(data, list) else []

    async def write(self, kind: Kind, items: list[dict[str, Any]]) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write, kind, items)

    def _write(self, kind: Kind, items: list[dict[str, Any]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{kind}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(items, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.directory / f"{kind}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)


class ConfigMapStore:
    """The ConfigMap's `<kind>.json` keys, read and replaced through the API."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.name = namespace, name

    async def read(self, kind: Kind) -> list[dict[str, Any]]:
        config_map = await asyncio.to_thread(
            self.core.read_namespaced_config_map, self.name, self.namespace
        )
        data = json.loads((config_map.data or {}).get(f"{kind}.json") or "[]")
        return data if isinstance(data, list) else []

    async def write(self, kind: Kind, items: list[dict[str, Any]]) -> None:
        config_map = await asyncio.to_thread(
            self.core.read_namespaced_config_map, self.name, self.namespace
        )
        # A replace carries the resourceVersion read above: a concurrent edit makes it a 409.
        config_map.data = {**(config_map.data or {}), f"{kind}.json": json.dumps(items, indent=2)}
        try:
            await asyncio.to_thread(
                self.core.replace_namespaced_config_map, self.name, self.namespace, config_map
            )
        except ApiException as error:
            if error.status == 409:
                raise Conflict(f"{kind} changed meanwhile; read it again and retry") from None
            raise
