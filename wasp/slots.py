"""Slots and slot ranges: the one parser every part of wasp uses.

A slot id is an upper-case prefix and a positive integer (`A1`, `B350`, `ZZ7`).
A range is `first..last` (written `first-last` in key files), inclusive, same
prefix, `first <= last`. Slots sort by prefix, then by number, so `A2` comes
before `A10`.

Slot ids arrive from URLs, JSON bodies and custom resources, and end up in file
paths (`/data/auth/<slot>/`), so the grammar is strict and bounded: anything
else is a `SlotError` (a `ValueError`) with a reason a person can act on.
`SLOT_PATTERN` is the same grammar as a regular expression, for the CRD schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

MAX_PREFIX_LENGTH = 8
MAX_NUMBER_DIGITS = 9
MAX_NUMBER = 10**MAX_NUMBER_DIGITS - 1

SLOT_PATTERN = rf"^[A-Z]{{1,{MAX_PREFIX_LENGTH}}}[1-9][0-9]{{0,{MAX_NUMBER_DIGITS - 1}}}$"
_SLOT_RE = re.compile(SLOT_PATTERN)
_MAX_SLOT_LENGTH = MAX_PREFIX_LENGTH + MAX_NUMBER_DIGITS
_SHOWN_CHARS = 24  # how much of a bad input an error message repeats

_GRAMMAR = (
    f"a slot is 1-{MAX_PREFIX_LENGTH} upper-case letters followed by a positive integer "
    f"of at most {MAX_NUMBER_DIGITS} digits without leading zeros, like 'A1' or 'B350'"
)


class SlotError(ValueError):
    """A slot id or range that wasp refuses; the message says why."""


def _shown(text: str) -> str:
    """Quote a bad input for an error message, cut short so 2 KB stays readable."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return repr(text[:_SHOWN_CHARS]) + f"... ({len(text)} chars)"


# Slots parsed before, by their text: a store read parses one per row (a slot is
# immutable, so any copy will do). Bounded: texts beyond it are parsed each time.
_PARSED: dict[str, Slot] = {}
_PARSED_KEPT = 100_000


@dataclass(frozen=True, order=True, slots=True)
class Slot:
    """One slot: ordered by prefix, then by number."""

    prefix: str
    number: int

    def __post_init__(self) -> None:
        text = f"{self.prefix}{self.number}"
        if not _SLOT_RE.fullmatch(text):
            raise SlotError(f"invalid slot {_shown(text)}: {_GRAMMAR}")

    @classmethod
    def parse(cls, text: object) -> Slot:
        """Parse `A1`-style text; raise `SlotError` with the reason otherwise."""
        if isinstance(text, Slot):
            return text
        if not isinstance(text, str):
            raise SlotError(f"invalid slot: expected a string like 'A1', got {type(text).__name__}")
        known = _PARSED.get(text)
        if known is not None:
            return known
        if len(text) > _MAX_SLOT_LENGTH or not _SLOT_RE.fullmatch(text):
            raise SlotError(f"invalid slot {_shown(text)}: {_GRAMMAR}")
        digits_at = len(text.rstrip("0123456789"))
        parsed = cls(text[:digits_at], int(text[digits_at:]))
        if len(_PARSED) < _PARSED_KEPT:
            _PARSED[text] = parsed
        return parsed

    def __str__(self) -> str:
        return f"{self.prefix}{self.number}"


@dataclass(frozen=True, order=True, slots=True)
class SlotRange:
    """An inclusive range of slots sharing one prefix, ordered by its first slot."""

    first: Slot
    last: Slot

    def __post_init__(self) -> None:
        if self.first.prefix != self.last.prefix:
            raise SlotError(
                f"invalid range {self.first}..{self.last}: both ends must share one prefix "
                f"({self.first.prefix!r} vs {self.last.prefix!r})"
            )
        if self.first.number > self.last.number:
            raise SlotError(
                f"invalid range {self.first}..{self.last}: the first slot comes after the last"
            )

    @classmethod
    def parse(cls, first: object, last: object) -> SlotRange:
        return cls(Slot.parse(first), Slot.parse(last))

    @classmethod
    def from_text(cls, text: object) -> SlotRange:
        """`A1-A50` or `A1..A50`; one slot `A7` is the range `A7-A7`."""
        if not isinstance(text, str):
            raise SlotError(
                f"invalid range: expected text like 'A1-A50', got {type(text).__name__}"
            )
        for separator in ("..", "-"):
            if separator in text:
                first, _, last = text.partition(separator)
                return cls.parse(first.strip(), last.strip())
        return cls.parse(text.strip(), text.strip())

    @property
    def prefix(self) -> str:
        return self.first.prefix

    def __len__(self) -> int:
        return self.last.number - self.first.number + 1

    def __iter__(self) -> Iterator[Slot]:
        for number in range(self.first.number, self.last.number + 1):
            yield Slot(self.prefix, number)

    def __contains__(self, slot: object) -> bool:
        if not isinstance(slot, Slot):
            return False
        return slot.prefix == self.prefix and self.first.number <= slot.number <= self.last.number

    def overlap(self, other: SlotRange) -> SlotRange | None:
        """The slots both ranges hold, or None when they are disjoint."""
        if self.prefix != other.prefix:
            return None
        first = max(self.first.number, other.first.number)
        last = min(self.last.number, other.last.number)
        if first > last:
            return None
        return SlotRange(Slot(self.prefix, first), Slot(self.prefix, last))

    def overlaps(self, other: SlotRange) -> bool:
        return self.overlap(other) is not None

    def __str__(self) -> str:
        return f"{self.first}..{self.last}"


def _to_slot(value: Any) -> Slot:
    try:
        return Slot.parse(value)
    except SlotError as error:
        # pydantic turns ValueError into a validation error carrying this text.
        raise ValueError(str(error)) from None


SlotId = Annotated[
    Slot,
    BeforeValidator(_to_slot),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": SLOT_PATTERN, "maxLength": _MAX_SLOT_LENGTH}),
]
"""A `Slot` field in pydantic models: parsed from and serialised to `A1` text."""
