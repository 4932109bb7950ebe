"""Anti-ban pacing, as the shard's spec, the worker's environment and the API state it.

WhatsApp bans accounts that send like machines: many messages a minute, or many
to one person. A worker paces each account with two token buckets (the worker's
`pacer`): one per session, one per recipient of that session, each refilling
`perMinute` tokens a minute up to `burst`. These models are the rules' one
definition: the WhatsAppShard's `pacing` block (and so its CRD schema), the
worker's PACING_* variables and the per-account override of the worker's API
all take their bounds from here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Safe for WhatsApp: a person typing fast, a small burst when a conversation starts.
SESSION_PER_MINUTE = 20
SESSION_BURST = 5
RECIPIENT_PER_MINUTE = 6
RECIPIENT_BURST = 2
JITTER = 0.5
# Bounds: the highest are far past what WhatsApp tolerates; they exist for the simulator
# (load tests, demos), where nobody is banned.
MAX_PER_MINUTE = 60_000
MAX_BURST = 10_000


class _Rules(BaseModel):
    # Strict: "6" is not a rate (a client's bug to show, not to guess at).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class Rate(_Rules):
    """A token bucket: `perMinute` messages a minute on average, at most `burst` at once."""

    perMinute: int = Field(
        ge=1, le=MAX_PER_MINUTE, description="Messages a minute, on average (the refill rate)."
    )
    burst: int = Field(
        ge=1, le=MAX_BURST, description="Messages that may go back to back after a quiet time."
    )


class Pacing(_Rules):
    """How fast each account of the shard sends; messages held by it stay `queued`."""

    session: Rate = Field(
        Rate(perMinute=SESSION_PER_MINUTE, burst=SESSION_BURST),
        description="Per account (session): every message it sends.",
    )
    recipient: Rate = Field(
        Rate(perMinute=RECIPIENT_PER_MINUTE, burst=RECIPIENT_BURST),
        description="Per account and chat: messages to one recipient or group.",
    )
    jitter: float = Field(
        JITTER,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="A message held by the account's pace waits up to this fraction of one "
        "interval (60 / session.perMinute seconds) more, at random, so held messages do not "
        "leave on a machine's beat.",
    )

    def merged(self, override: PacingOverride | None) -> Pacing:
        """These rules with what `override` sets replacing them."""
        if override is None:
            return self
        return Pacing(
            session=override.session or self.session,
            recipient=override.recipient or self.recipient,
            jitter=self.jitter if override.jitter is None else override.jitter,
        )


class PacingOverride(_Rules):
    """Body of PUT /api/accounts/{slot}/pacing: one account's own pace; what it leaves out
    (or `{}`, to clear it) follows the shard's. Kept on the shard's volume."""

    session: Rate | None = Field(None, description="Per account: every message it sends.")
    recipient: Rate | None = Field(None, description="Per account and chat.")
    jitter: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="As the shard's `pacing.jitter`."
    )
