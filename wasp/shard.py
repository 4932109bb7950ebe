"""The WhatsAppShard resource: spec and status models, the one source of its CRD schema.

`crds/whatsappshards.wasp.dev.yaml` is generated from these models
(`python -m wasp.crd --write`, checked by a test): field descriptions become the
schema's descriptions (what `kubectl explain` shows), defaults become schema
defaults, and the `x-kubernetes-validations` attached here become CEL rules
that the apiserver enforces before any wasp code sees an object. The resource's
names, its name rule, the worker's defaults and the variables a shard may not
set are the programs' shared contract (`wasp.contract`), imported here.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from kubernetes.utils.quantity import parse_quantity as kubernetes_quantity
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.config import JsonDict

from wasp.contract import MAX_ACTIVE, MAX_INIT, RESERVED_ENV, WARMUP_LIMIT, Backend
from wasp.pacing import Pacing
from wasp.retention import Retention
from wasp.slots import SLOT_PATTERN, SlotId, SlotRange

MAX_SESSIONS_PER_SHARD = 5000

# Numbers are compared only once the format rule holds, so a malformed slot
# gets the format message instead of a CEL evaluation error.
_BOTH_WELL_FORMED = (
    f"self.slotFrom.matches('{SLOT_PATTERN}') && self.slotTo.matches('{SLOT_PATTERN}')"
)
_SAME_PREFIX = "self.slotFrom.find('^[A-Z]+') == self.slotTo.find('^[A-Z]+')"
_FROM_LE_TO = "int(self.slotFrom.find('[0-9]+$')) <= int(self.slotTo.find('[0-9]+$'))"


def _cel(rule: str, message: str, reason: str | None = None, field: str | None = None) -> JsonDict:
    validation: JsonDict = {"rule": rule, "message": message}
    if reason:
        validation["reason"] = reason
    if field:
        validation["fieldPath"] = field
    return validation


def _schema(**schema: Any) -> WithJsonSchema:
    return WithJsonSchema(schema)


# The apiserver's grammar of a quantity; the client library's parser is looser (`1K`, ` 1Gi`).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
MIN_STORAGE = 64 * 2**20
MAX_STORAGE = 16 * 2**40


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity as a number (`1Gi` -> 1073741824); ValueError if it is not one."""
    if not re.fullmatch(QUANTITY_PATTERN, text):
        raise ValueError(f"not a quantity: {text!r}")
    return Decimal(kubernetes_quantity(text))


Quantity = Annotated[
    int | str,
    _schema(
        **{"x-kubernetes-int-or-string": True},
        anyOf=[{"type": "integer"}, {"type": "string"}],
        pattern=QUANTITY_PATTERN,
    ),
]
"""A Kubernetes resource quantity (`500m`, `1Gi`, `2`)."""

OpaqueObject = Annotated[
    dict[str, Any],
    _schema(type="object", **{"x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through to the pod as is (validated by the apiserver there)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Capacity(_Model):
    """How many WhatsApp sessions the shard's worker holds and starts at once."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.maxInit <= self.maxActive",
                    "maxInit must not exceed maxActive",
                    field=".maxInit",
                ),
                _cel(
                    "self.warmupLimit <= self.maxActive",
                    "warmupLimit must not exceed maxActive",
                    field=".warmupLimit",
                ),
            ]
        }
    )

    maxActive: int = Field(
        MAX_ACTIVE,
        ge=1,
        le=MAX_SESSIONS_PER_SHARD,
        description="Most sessions the worker holds at once (from init through QR to ready); "
        "a connect past it is refused with 429.",
    )
    maxInit: int = Field(
        MAX_INIT,
        ge=1,
        le=MAX_SESSIONS_PER_SHARD,
        description="Most sessions initialising at the same time. At most maxActive.",
    )

    @model_validator(mode="after")
    def _limits_within_max_active(self) -> Self:
        if self.maxInit > self.maxActive:
            raise ValueError("maxInit must not exceed maxActive")
        if self.warmupLimit > self.maxActive:
            raise ValueError("warmupLimit must not exceed maxActive")
        return self

    warmupLimit: int = Field(
        WARMUP_LIMIT,
        ge=0,
        le=MAX_SESSIONS_PER_SHARD,
        description="Most sessions started by the warm-up after the worker starts "
        "(bound slots enabled in the shared config). At most maxActive.",
    )


class Storage(_Model):
    """The shard's persistent volume: session auth, media and the message store live here."""

    size: Annotated[
        str,
        _schema(
            type="string",
            maxLength=16,
            **{
                "x-kubernetes-validations": [
                    _cel(
                        "isQuantity(self) && quantity(self).compareTo(quantity('64Mi')) >= 0"
                        " && quantity(self).compareTo(quantity('16Ti')) <= 0",
                        "storage.size must be a quantity between 64Mi and 16Ti, like 1Gi",
                    )
                ]
            },
        ),
    ] = Field("1Gi", description="Size of the volume claimed for /data, e.g. 1Gi.")

    @field_validator("size")
    @classmethod
    def _size_in_bounds(cls, size: str) -> str:
        if not MIN_STORAGE <= parse_quantity(size) <= MAX_STORAGE:
            raise ValueError("storage.size must be a quantity between 64Mi and 16Ti, like 1Gi")
        return size

    storageClassName: str | None = Field(
        None,
        max_length=253,
        description="StorageClass of the volume; the cluster's default class when unset.",
    )
    retainOnDelete: bool = Field(
        True,
        description="Keep the volume (and with it the accounts' sessions) when the shard is "
        "deleted. Set false to delete the volume with the shard.",
    )


class ResourceRequirements(_Model):
    """Compute resources of the worker container."""

    limits: dict[str, Quantity] | None = Field(
        None, description="Most resources the worker may use, e.g. {memory: 512Mi}."
    )
    requests: dict[str, Quantity] | None = Field(
        None, description="Resources reserved for the worker, e.g. {cpu: 100m, memory: 256Mi}."
    )


class EnvVar(_Model):
    """An extra environment variable of the worker container."""

    name: str = Field(description="Variable name.", min_length=1, max_length=256)
    value: str | None = Field(None, description="Literal value.")
    valueFrom: OpaqueObject | None = Field(
        None, description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef...)."
    )


class WhatsAppShardSpec(_Model):
    """Desired state of a WhatsAppShard: one range of slots and the worker that serves it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"!({_BOTH_WELL_FORMED}) || {_SAME_PREFIX}",
                    "slotFrom and slotTo must share one prefix, like A1..A50",
                    field=".slotTo",
                ),
                _cel(
                    f"!({_BOTH_WELL_FORMED}) || !({_SAME_PREFIX}) || {_FROM_LE_TO}",
                    "slotFrom must not come after slotTo",
                    field=".slotTo",
                ),
            ]
        }
    )

    slotFrom: SlotId = Field(description="First slot of the range, inclusive, like A1.")
    slotTo: SlotId = Field(description="Last slot of the range, inclusive, like A50.")
    capacity: Capacity = Field(Capacity(), description="Session limits of the shard's worker.")
    storage: Storage = Field(
        Storage(), description="The shard's persistent volume, mounted at /data."
    )
    pacing: Pacing = Field(
        Pacing(),
        description="Anti-ban pace of every account of the shard: token buckets per account "
        "and per account and chat. A message the pace holds stays queued until it may "
        "leave. One account may have its own (PUT /api/accounts/{slot}/pacing).",
    )
    retention: Retention = Field(
        Retention(),
        description="How long the shard keeps its messages: the worker deletes older ones, "
        "with their media, and incremental sync reports them deleted. Unset: kept. And how "
        "long its sync change log keeps every change (syncHorizonDays, 30 by default).",
    )
    suspend: bool = Field(
        False,
        description="Scale the shard to zero. The master clears it again when a request "
        "for one of the shard's slots arrives.",
    )
    backend: Backend = Field(
        "neonize",
        description="Session backend: neonize (real WhatsApp through whatsmeow) or simulator "
        "(deterministic, in-process, for tests and demos).",
    )
    image: str | None = Field(
        None, max_length=512, description="Worker image; the operator's own image when unset."
    )
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Pull policy of the worker image."
    )
    resources: ResourceRequirements | None = Field(
        None, description="Compute resources of the worker container."
    )
    env: list[EnvVar] | None = Field(
        None,
        max_length=64,
        description="Extra environment variables of the worker.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.all(e, !(e.name in " + str(list(RESERVED_ENV)) + "))",
                    "env may not set a variable the operator owns: " + ", ".join(RESERVED_ENV),
                )
            ]
        },
    )
    nodeSelector: dict[str, str] | None = Field(
        None, description="Node labels the worker pod must match."
    )
    tolerations: list[OpaqueObject] | None = Field(
        None, max_length=32, description="Tolerations of the worker pod."
    )
    affinity: OpaqueObject | None = Field(None, description="Affinity of the worker pod.")

    @model_validator(mode="after")
    def _range_and_env(self) -> Self:
        SlotRange(self.slotFrom, self.slotTo)  # same prefix, from <= to, else SlotError
        owned = [e.name for e in self.env or [] if e.name in RESERVED_ENV]
        if owned:
            raise ValueError(f"env may not set a variable the operator owns: {', '.join(owned)}")
        return self

    @property
    def slots(self) -> SlotRange:
        return SlotRange(self.slotFrom, self.slotTo)


Phase = Literal["Pending", "Ready", "Suspended", "Degraded", "Conflict"]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]


class Condition(_Model):
    """A condition in the metav1.Condition shape."""

    type: str = Field(
        description="Condition type: Ready, Progressing or SlotConflict.", max_length=316
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observedGeneration: int | None = Field(
        None, ge=0, description="Generation of the spec this condition was computed from."
    )
    lastTransitionTime: Annotated[str, _schema(type="string", format="date-time")] = Field(
        description="When the status last changed."
    )
    reason: str = Field(description="Why, in one CamelCase word.", max_length=1024)
    message: str = Field(description="Why, for a person.", max_length=32768)


class WhatsAppShardStatus(_Model):
    """Observed state of a WhatsAppShard, written by the operator."""

    phase: Phase | None = Field(
        None, description="Pending, Ready, Suspended, Degraded or Conflict."
    )
    observedGeneration: int | None = Field(
        None, description="The spec generation the operator last reconciled."
    )
    readyReplicas: int | None = Field(None, description="Ready worker pods (0 or 1).")
    endpoint: str | None = Field(None, description="Worker URL inside the cluster.")
    active: int | None = Field(None, description="Sessions the worker holds now, from its /health.")
    maxActive: int | None = Field(None, description="The worker's session limit.")
    conditions: list[Condition] | None = Field(
        None, description="Ready, Progressing and SlotConflict, in the metav1.Condition shape."
    )


class WhatsAppShard(_Model):
    """A range of WhatsApp slots served by one worker pod with its own volume."""

    spec: WhatsAppShardSpec = Field(description="Desired state.")
    status: WhatsAppShardStatus | None = Field(None, description="Observed state.")
