"""Pydantic validation errors as one line a client can act on (both APIs' 400 bodies)."""

from __future__ import annotations

from pydantic import ValidationError


def problems(error: ValidationError, limit: int | None = None) -> str:
    """`field.path: message; ...`, at most `limit` of them."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:limit]
    )
