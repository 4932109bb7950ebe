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
