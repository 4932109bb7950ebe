"""Where the routing table comes from: WhatsAppShard resources (watched) or a shards file.

Kubernetes mode watches the namespace's shards with kopf (standalone: no
peering, no patches, no finalizers; it only reads) and edits the table on every
event, so creates, updates and deletes reach routing at once. Local mode reads
SHARDS_JSON, or a JSON/YAML file of the same shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import kopf
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wasp.contract import (
    CRD,
    MAX_ACTIVE,
    MAX_INIT,
    WARMUP_LIMIT,
    WORKER_PORT,
    ShardName,
    worker_endpoint,
)
from wasp.kube import connection_info
from wasp.slots import SlotId, SlotRange
from wasp.validation import problems
from wasp.waiting import wait_set
from wasp_master.routing import RoutingTable, ShardRoute

log = logging.getLogger("wasp.master")


class LocalShard(BaseModel):
    """One entry of a shards file, (`id, port, from, to, workdir`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: ShardName  # a WhatsAppShard's name: the same rule in a file as in a cluster
    port: int = Field(ge=1, le=65535)
    slot_from: SlotId = Field(alias="from")
    slot_to: SlotId = Field(alias="to")
    workdir: Path | None = None
    host: str = "127.0.0.1"
    max_active: int = Field(MAX_ACTIVE, alias="maxActive", ge=1)
    max_init: int = Field(MAX_INIT, alias="maxInit", ge=1)
    warmup_limit: int = Field(WARMUP_LIMIT, alias="warmupLimit", ge=0)

    @model_validator(mode="after")
    def _range_is_valid(self) -> Self:
        SlotRange(self.slot_from, self.slot_to)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def route(self) -> ShardRoute:
        return ShardRoute(self.id, self.url, SlotRange(self.slot_from, self.slot_to))


class ShardsFile(BaseModel):
    shards: list[LocalShard]


def parse_shards(text: str) -> list[LocalShard]:
    """A JSON or YAML list of shards (or `{shards: [...]}`); ranges must not overlap.

    ValueError with every problem on one line (`shards.0.id: ...`) otherwise: a shard
    id is checked here by the rule every worker checks its SHARD_NAME with, so a file
    `wasp dev` accepts never starts a worker that refuses its name."""
    data = yaml.safe_load(text)  # YAML is a superset of JSON
    if isinstance(data, dict):
        data = data.get("shards")
    try:
        shards = ShardsFile.model_validate({"shards": data}).shards
    except ValidationError as error:
        raise ValueError(problems(error)) from None
    seen: list[LocalShard] = []
    for shard in shards:
        for other in seen:
            if shard.id == other.id:
                raise ValueError(f"shard id {shard.id!r} appears twice")
            if SlotRange(shard.slot_from, shard.slot_to).overlaps(
                SlotRange(other.slot_from, other.slot_to)
            ):
                raise ValueError(f"shards {other.id} and {shard.id} overlap")
        seen.append(shard)
    return shards


def load_shards(shards_json: str | None, shards_file: Path | None) -> list[LocalShard]:
    if shards_json:
        return parse_shards(shards_json)
    if shards_file is not None:
        return parse_shards(shards_file.read_text())
    raise ValueError("local mode needs SHARDS_JSON or --shards-file")


def route_of(body: Mapping[str, Any], endpoint_template: str | None) -> ShardRoute | None:
    """A WhatsAppShard as a route; None while it must not receive traffic (slot conflict)."""
    metadata, spec = body.get("metadata", {}), body.get("spec", {})
    status = body.get("status") or {}
    if status.get("phase") == "Conflict":
        return None
    name, namespace = metadata["name"], metadata["namespace"]
    if endpoint_template:
        url = endpoint_template.format(name=name, namespace=namespace, port=WORKER_PORT)
    else:
        url = status.get("endpoint") or worker_endpoint(name, namespace)
    current = status.get("observedGeneration", 0) >= metadata.get("generation", 0)
    return ShardRoute(
        id=name,
        url=url.rstrip("/"),
        slots=SlotRange.parse(spec["slotFrom"], spec["slotTo"]),
        suspended=bool(spec.get("suspend", False)),
        ready=status.get("phase") == "Ready" and current,
    )


class ShardDirectory:
    """The routing table plus a signal for whoever waits on a change (wake-ups, pollers)."""

    def __init__(self, table: RoutingTable | None = None) -> None:
        self.table = table or RoutingTable()
        self._changed = asyncio.Event()
        self.listeners: list[Callable[[], None]] = []

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in self.listeners:
            listener()

    def put(self, route: ShardRoute) -> None:
        if self.table.get(route.id) != route:
            self.table.put(route)
            self._notify()

    def remove(self, shard_id: str) -> None:
        if self.table.get(shard_id) is not None:
            self.table.remove(shard_id)
            self._notify()

    async def changed(self, timeout_s: float) -> None:
        """Return at the next change, or after `timeout_s`."""
        await wait_set(self._changed, timeout_s)


def watcher(
    directory: ShardDirectory, configuration: Any, endpoint_template: str | None
) -> kopf.OperatorRegistry:
    """kopf handlers that keep the directory equal to the namespace's shards."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.posting.enabled = False  # the master only reads: no Events either
        # Its account may not list namespaces or CRDs; without scanning kopf uses the
        # one namespace as given instead of retrying forbidden lists for a minute.
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300

    @kopf.on.event(*CRD.resource, registry=registry)
    async def shard_event(event: kopf.RawEvent, body: kopf.Body, **_: object) -> None:
        name = body.metadata.name
        if name is None:
            return
        if event["type"] == "DELETED":
            directory.remove(name)
            return
        try:
            route = route_of(dict(body), endpoint_template)
        except (KeyError, ValueError) as error:
            log.warning(
                json.dumps({"event": "shard_unroutable", "shard": name, "error": str(error)})
            )
            directory.remove(name)
            return
        if route is None:
            directory.remove(name)
        else:
            directory.put(route)

    return registry
