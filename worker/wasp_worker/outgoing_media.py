"""Files a client sends with a message: checked before queueing, kept on the volume until sent.

The bytes (from `media_base64`, or a multipart upload's `file` part) get each kind's
limits checked before anything is queued: a size (413 names it) and the types the kind
takes (415 lists them), the type detected from the bytes (`filetype`, magic numbers)
wherever it can be, so a renamed file is still what it is. Accepted bytes live in
`WORKDIR/outgoing/<sha256>`: written and fsynced (file and folder) by the queue before
the row that names them commits, removed once no queued row names them any more.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import filetype

from wasp_worker.errors import TooLarge, UnsupportedType

KIB, MIB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class Limit:
    max_bytes: int
    types: frozenset[str] | None  # None: any type
    family: str | None = None  # any type of this family (`audio/`), when `types` is None


LIMITS: dict[str, Limit] = {
    "image": Limit(16 * MIB, frozenset({"image/jpeg", "image/png", "image/webp"})),
    "video": Limit(16 * MIB, frozenset({"video/mp4", "video/3gpp"})),
    "audio": Limit(16 * MIB, None, "audio/"),
    "voice": Limit(16 * MIB, frozenset({"audio/ogg", "audio/opus"})),
    "sticker": Limit(500 * KIB, frozenset({"image/webp"})),
    "document": Limit(100 * MIB, None),
}
UPLOAD_MAX_BYTES = max(limit.max_bytes for limit in LIMITS.values())


@dataclass(frozen=True)
class Upload:
    """Bytes accepted for a message: their type, size and name on the volume."""

    data: bytes
    mime: str
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


def decode(text: str) -> bytes:
    """Standard base64 (the request model has already checked its shape)."""
    return base64.b64decode(text, validate=True)


def _readable(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size // KIB} KiB"


def check(kind: str, data: bytes, declared: str | None) -> Upload:
    """The bytes as a `kind` message's file, or TooLarge / UnsupportedType with the reason."""
    limit = LIMITS[kind]
    if len(data) > limit.max_bytes:
        raise TooLarge(
            f"{kind}: {len(data)} bytes is over the limit of {_readable(limit.max_bytes)}"
        )
    detected: str | None = filetype.guess_mime(data)
    if kind == "document":  # any type: the client's word first, it knows what it sends
        mime = declared or detected or "application/octet-stream"
    else:
        # What the bytes are, not what they are called (audio formats without a magic
        # number, such as raw AAC frames, may be named).
        mime = detected or (declared if kind == "audio" else None) or ""
        accepted = (
            mime in limit.types if limit.types is not None else mime.startswith(limit.family or "")
        )
        if not accepted:
            wanted = ", ".join(sorted(limit.types)) if limit.types else f"{limit.family}*"
            found = mime or "unknown"
            raise UnsupportedType(f"{kind}: type {found} is not accepted (accepted: {wanted})")
    return Upload(data, mime, hashlib.sha256(data).hexdigest())


def folder(work_dir: Path) -> Path:
    return work_dir / "outgoing"


def path(work_dir: Path, sha256: str) -> Path:
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 name")  # names come from the queue's rows only
    return folder(work_dir) / sha256


def write(work_dir: Path, upload: Upload) -> None:
    """The bytes on the volume under their hash, durable (file and folder fsynced) before
    the caller commits the row that names them. Blocking: the database's thread calls it."""
    target = path(work_dir, upload.sha256)
    if target.exists():  # the same bytes, queued before: content-addressed, nothing to add
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{upload.sha256}.partial")
    with open(partial, "wb") as out:
        out.write(upload.data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read(work_dir: Path, sha256: str) -> bytes:
    return path(work_dir, sha256).read_bytes()


def remove(work_dir: Path, sha256: str) -> None:
    path(work_dir, sha256).unlink(missing_ok=True)
