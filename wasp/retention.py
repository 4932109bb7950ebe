"""How long a shard keeps its messages, as the shard's spec and the worker's environment state it.

A WhatsAppShard's `retention` block bounds the shard's message store by age
(`maxAgeDays`) and by count per chat (`maxMessagesPerChat`); unset, nothing is
pruned. `syncHorizonDays` bounds the sync change log (always: 30 days unless
set; `wasp_worker.compaction`). The worker's RETENTION_* variables carry it (the
operator renders them from the spec, and a shard's extra env may not override
them). These models are the one definition of the rules and their bounds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_AGE_DAYS = 36_500  # a hundred years: past it, "keep everything" says it better
MAX_MESSAGES_PER_CHAT = 10_000_000
SYNC_HORIZON_DAYS = 30


class Retention(BaseModel):
    """What the shard's worker prunes: messages older than `maxAgeDays`, and each chat's
    oldest past its newest `maxMessagesPerChat`. Unset: kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    maxAgeDays: int | None = Field(
        None,
        ge=1,
        le=MAX_AGE_DAYS,
        description="Delete messages (and their media) older than this many days.",
    )
    maxMessagesPerChat: int | None = Field(
        None,
        ge=1,
        le=MAX_MESSAGES_PER_CHAT,
        description="Keep at most this many messages per chat, the newest; delete the older "
        "ones (and their media).",
    )
    syncHorizonDays: int = Field(
        SYNC_HORIZON_DAYS,
        ge=1,
        le=MAX_AGE_DAYS,
        description="Compact the incremental sync change log past this many days: older "
        "changes keep only each live item's latest, and a sync cursor older than that "
        "answers 410 (the client starts again from the beginning).",
    )
