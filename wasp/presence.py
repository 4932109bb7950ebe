"""The body of POST /api/accounts/{slot}/conversations/{chat_id}/presence: what the
account shows in a chat now (typing, recording a voice note, or neither). Presence is
ephemeral: sent at once, never queued."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PresenceRequest(BaseModel):
    """Body of POST /api/accounts/{slot}/conversations/{chat_id}/presence."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    state: Literal["typing", "recording", "paused"] = Field(
        description="typing, recording (a voice note), or paused (stopped either)."
    )
