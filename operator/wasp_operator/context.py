"""What every kopf handler of the operator shares: the memo, the index views, the spec.

kopf hands the `Context` to each handler as `memo`; the indexes keep shards and
StatefulSets as `ShardView` and `WorkloadView`, so no handler lists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from wasp.shard import WhatsAppShardSpec
from wasp_operator.config import OperatorConfig
from wasp_operator.kube import Kube
from wasp_operator.metrics import OperatorMetrics

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Health:
    active: int
    max_active: int


@dataclass
class Context:
    """Everything the handlers share, handed to them by kopf as `memo`."""

    config: OperatorConfig
    kube: Kube
    metrics: OperatorMetrics
    http: aiohttp.ClientSession | None = None
    health: dict[Key, Health] = field(default_factory=dict)
    published: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # The spec each shard's children were last made from: status between reconciles
    # describes that one, not a newer spec the index already has but nobody applied.
    reconciled: dict[Key, WhatsAppShardSpec] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    loop_task: asyncio.Task[None] | None = None

    # kopf copies the memo for every object it handles; this state is operator-wide.
    def __copy__(self) -> Context:
        return self

    def __deepcopy__(self, _memo: dict[int, Any]) -> Context:
        return self


@dataclass(frozen=True)
class ShardView:
    """A shard as the indexes hold it."""

    uid: str
    created: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]

    @classmethod
    def of(cls, uid: str, meta: Any, spec: Any, status: Any) -> ShardView:
        """From kopf's handler kwargs."""
        created, generation = meta.get("creationTimestamp", ""), meta.get("generation", 1)
        return cls(uid, created, generation, dict(spec), dict(status))


@dataclass(frozen=True)
class WorkloadView:
    ready_replicas: int
    rolled_out: bool


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_spec(spec: Any) -> WhatsAppShardSpec:
    try:
        return WhatsAppShardSpec.model_validate(dict(spec))
    except ValidationError as error:
        # The CRD schema should have refused it; never build pods from a bad spec.
        raise kopf.PermanentError(f"invalid spec: {error}") from None


def first(store: Iterable[Any] | None) -> Any | None:
    return next(iter(store), None) if store is not None else None
