"""Admission: the validating webhook refuses a shard whose range overlaps another's."""

from __future__ import annotations

from typing import Any

import kopf

from wasp.slots import SlotError, SlotRange
from wasp_operator.conflicts import ShardRef, overlaps


def refuse_overlap(
    spec: Any,
    name: str | None,
    namespace: str | None,
    shard_ranges: kopf.Index[str, ShardRef],
    **_: Any,
) -> None:
    """Admission: refuse a shard whose range overlaps another shard's in its namespace."""
    try:
        slots = SlotRange.parse(spec.get("slotFrom"), spec.get("slotTo"))
    except SlotError as error:
        raise kopf.AdmissionError(str(error), code=400) from None
    found = overlaps(slots, shard_ranges.get(namespace or "", []), name or "")
    if found:
        details = "; ".join(
            f"shard {c.other!r} already serves {c.shared} ({len(c.shared)} slots)" for c in found
        )
        raise kopf.AdmissionError(
            f"slot range {slots} overlaps other shards in namespace {namespace!r}: {details}",
            code=409,
        )
