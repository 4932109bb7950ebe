"""Pydantic validation errors as one line a client can act on (both APIs' 400 bodies)."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError


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
