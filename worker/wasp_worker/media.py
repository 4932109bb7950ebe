"""Inbound media on the shard's volume: `WORKDIR/media/<slot>/<wa_message_id>.<ext>`.

Message ids come from the network, so a name is built only from an id of safe
characters and an extension from a fixed list: never a path from input.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from wasp.slots import Slot

EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/3gpp": "3gp",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "text/plain": "txt",
}
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def file_name(message_id: str, mime: str | None) -> str:
    if not _ID.match(message_id):
        raise ValueError(f"unsafe message id {message_id[:40]!r}")
    base = (mime or "").split(";")[0].strip().lower()
    return f"{message_id}.{EXTENSIONS.get(base, 'bin')}"


def media_dir(work_dir: Path, slot: Slot) -> Path:
    return work_dir / "media" / str(slot)


def save(work_dir: Path, slot: Slot, message_id: str, mime: str | None, data: bytes) -> str:
    """Write the media atomically; return its file name."""
    name = file_name(message_id, mime)
    folder = media_dir(work_dir, slot)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.partial"
    partial.write_bytes(data)
    os.replace(partial, folder / name)
    return name


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}\.[a-z0-9]{1,8}$")


def stored_name(slot: Slot, media_url: str | None) -> str | None:
    """The file name a stored message's `media_url` names on this volume, None when it
    names none here (no media, a URL elsewhere, or a name `save` never makes)."""
    prefix = f"/api/accounts/{slot}/media/"
    if not media_url or not media_url.startswith(prefix):
        return None
    name = media_url[len(prefix) :]
    return name if _NAME.match(name) else None


def remove(work_dir: Path, slot: Slot, names: list[str]) -> int:
    """Delete these media files of the slot (names as `stored_name` gives them); how many
    were there."""
    folder = media_dir(work_dir, slot)
    removed = 0
    for name in names:
        if not _NAME.match(name):
            continue
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed
