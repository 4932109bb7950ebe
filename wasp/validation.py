"""Pydantic validation errors as one line a client can act on (both APIs' 400 bodies)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError


def problems(error: ValidationError, limit: int | None = None, tags: Collection[str] = ()) -> str:
    """`field.path: message; ...`, at most `limit` of them.

    `tags` are the values of a discriminated union's tag: pydantic puts the tag
    first in the location, which reads as a field; it is named after the message.
    """
    lines = []
    for found in error.errors()[:limit]:
        where, suffix = list(found["loc"]), ""
        if where and where[0] in tags:
            suffix = f" (type {where.pop(0)})"
        lines.append(f"{'.'.join(map(str, where)) or 'body'}: {found['msg']}{suffix}")
    return "; ".join(lines)


def _integral(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; strict pydantic would refuse it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_integral)]
"""An integer as JSON Schema means it (3 and 3.0), for strict body models."""
