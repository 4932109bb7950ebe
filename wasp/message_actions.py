"""The bodies of the actions on a message already in a slot's store: a reaction (or its
removal), an edit, a delete for everyone (no body) and a vote in a poll.

One source of truth, in the core because both APIs declare these bodies (the
worker answers them, the master routes them): the models say the shape, and
`check_emoji` / `check_options` the rules a schema cannot say (what an emoji is,
which options a poll has). A body that breaks those is schema-valid, so it is a
422 with the reason, never a 400.
"""

from __future__ import annotations

from typing import Annotated

import emoji
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# WhatsApp's window for editing a sent message.
EDIT_WINDOW_S = 15 * 60
MAX_POLL_OPTIONS = 12
# The longest emoji sequences (a family of four with skin tones, ZWJ joined) stay far inside.
MAX_EMOJI_CHARS = 32

IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
OptionName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    idempotency_key: IdempotencyKey | None = Field(
        None, description="A retry with the same key returns the first action instead of a new one."
    )


class ReactionRequest(_Action):
    """Body of POST .../messages/{message_id}/reaction."""

    emoji: str = Field(
        max_length=MAX_EMOJI_CHARS,
        description='Exactly one emoji (ZWJ sequences, skin tones and flags count as one); "" '
        "removes the account's reaction.",
    )


class EditRequest(_Action):
    """Body of PATCH .../messages/{message_id}: the new text of a message the account sent."""

    text: str = Field(min_length=1, max_length=65536, description="The message's new text.")


class VoteRequest(_Action):
    """Body of POST .../messages/{message_id}/vote."""

    options: list[OptionName] = Field(
        max_length=MAX_POLL_OPTIONS,
        description="The names of the options chosen (the poll's own); [] withdraws the vote.",
    )


class ActionRefused(ValueError):
    """A schema-valid body the action cannot take (the message says why)."""


def check_emoji(text: str) -> str:
    """The reaction's emoji: exactly one, or "" to remove; ActionRefused otherwise."""
    if text and not emoji.is_emoji(text):
        raise ActionRefused(f"emoji: {text[:MAX_EMOJI_CHARS]!r} is not exactly one emoji")
    return text


def check_options(chosen: list[str], offered: list[str], selectable: int) -> list[str]:
    """The vote's options: each among the poll's, none twice, at most `selectable` of them."""
    unknown = [name for name in chosen if name not in offered]
    if unknown:
        raise ActionRefused(f"options: {unknown[0][:64]!r} is not an option of this poll")
    if len(set(chosen)) != len(chosen):
        raise ActionRefused("options: an option is chosen twice")
    if selectable and len(chosen) > selectable:
        raise ActionRefused(f"options: this poll takes at most {selectable} choice(s)")
    return chosen
