"""API keys as records: who holds a key, what it may do, and where.

A record names the key (`id`), the key's hash (never the key itself), the
operations it allows and its scope: some workspaces, some slot ranges, or
everything. Records live in a keys file (YAML or JSON) that the master re-reads
while it runs, so keys are added, rotated and revoked by rewriting the file (in
Kubernetes: editing the Secret mounted there) with no restart. A file that does
not parse keeps the last good set in force and says why in a log line.

Why SHA-256 and not a password hash (bcrypt, scrypt, argon2): API keys are 256
random bits (`new_key`), not passwords people choose. A slow hash protects
guessable secrets; nobody searches a 2^256 space however fast the hash is, and a
fast hash lets the master check every request without spending CPU on it.

The plain `API_KEYS` list of the environment still works: each of its keys is a
full-access (`admin`) record, hashed at start, as before scoped keys existed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from wasp.slots import Slot, SlotError, SlotRange
from wasp.validation import problems

log = logging.getLogger("wasp.master")

Operation = Literal["read", "send", "session", "config", "admin"]
OPERATIONS: tuple[Operation, ...] = ("read", "send", "session", "config", "admin")
# Operations that act on lists spanning every workspace: only unscoped keys may hold them.
WHOLE: frozenset[Operation] = frozenset({"config", "admin"})
HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
KEY_BYTES = 32


def _range(value: Any) -> SlotRange:
    if isinstance(value, SlotRange):
        return value
    try:
        return SlotRange.from_text(value)
    except SlotError as error:
        raise ValueError(str(error)) from None


def _sorted_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


RangeText = Annotated[
    SlotRange,
    BeforeValidator(_range),
    PlainSerializer(lambda r: f"{r.first}-{r.last}", return_type=str),
]
"""A slot range written `A1-A50` (or `A1..A50`, or one slot `A7`)."""

Workspace = Annotated[str, Field(min_length=1, max_length=128)]


class KeyRecord(BaseModel):
    """One API key as stored: its name, its hash, what it may do, and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Who holds it; logged.")
    hash: str = Field(pattern=HASH_PATTERN, repr=False, description="sha256:<hex> of the key.")
    operations: Annotated[tuple[Operation, ...], AfterValidator(_sorted_unique)] = Field(
        min_length=1, description="read, send, session, config, admin (admin: all of them)."
    )
    workspaces: Annotated[tuple[Workspace, ...], AfterValidator(_sorted_unique)] | None = Field(
        None, min_length=1, description="Only slots of these workspaces (accounts' `ws`)."
    )
    slots: tuple[RangeText, ...] | None = Field(
        None, min_length=1, description="Only slots in these ranges."
    )

    @model_validator(mode="after")
    def _one_scope(self) -> KeyRecord:
        if self.workspaces is not None and self.slots is not None:
            raise ValueError("give `workspaces` or `slots`, not both")
        if WHOLE & set(self.operations) and not self.unrestricted:
            raise ValueError(
                "`config` and `admin` are for keys without `workspaces` or `slots`: "
                "the shared config lists span every workspace"
            )
        return self

    @property
    def unrestricted(self) -> bool:
        return self.workspaces is None and self.slots is None

    def allows(self, operation: Operation) -> bool:
        return "admin" in self.operations or operation in self.operations

    def covers(self, slot: Slot, workspace: str) -> bool:
        """Whether the slot (in that workspace) is inside this key's scope."""
        if self.slots is not None:
            return any(slot in r for r in self.slots)
        if self.workspaces is not None:
            return workspace in self.workspaces
        return True

    def overlaps(self, shard: SlotRange) -> bool:
        return self.slots is None or any(r.overlaps(shard) for r in self.slots)

    def scope(self) -> str:
        """The scope in words, for refusals."""
        if self.slots is not None:
            return "slots " + ", ".join(f"{r.first}-{r.last}" for r in self.slots)
        if self.workspaces is not None:
            return "workspaces " + ", ".join(self.workspaces)
        return "every slot"


class KeysFile(BaseModel):
    """The keys file: `{keys: [record, ...]}`; ids and hashes are unique."""

    model_config = ConfigDict(extra="forbid")

    keys: list[KeyRecord]

    @model_validator(mode="after")
    def _unique(self) -> KeysFile:
        for field in ("id", "hash"):
            values = [getattr(k, field) for k in self.keys]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                named = ", ".join(twice) if field == "id" else f"{len(twice)} hash(es)"
                raise ValueError(f"{field} listed more than once: {named}")
        return self


class KeysError(ValueError):
    """A keys file that cannot be used; the message never repeats file content."""


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key; the prefix lets secret scanners recognise a leaked one."""
    return "wasp_" + secrets.token_urlsafe(KEY_BYTES)


def parse_keys(text: str | bytes, source: str) -> tuple[KeyRecord, ...]:
    """The records of a keys file, or KeysError saying where it is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        # Not str(error): it quotes the offending line, which could hold a pasted key.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KeysError(
            f"{source}: not YAML or JSON{where}: {getattr(error, 'problem', None)}"
        ) from None
    try:
        return tuple(KeysFile.model_validate(data).keys)
    except ValidationError as error:
        raise KeysError(f"{source}: {problems(error, limit=5)}") from None


def env_records(plain: Iterable[str]) -> tuple[KeyRecord, ...]:
    """`API_KEYS` (plain keys): full-access records, hashed here and kept only hashed."""
    return tuple(
        KeyRecord(id=f"env-{n}", hash=hash_key(key), operations=("admin",))
        for n, key in enumerate(plain, 1)
    )


class KeyRing:
    """The keys the master accepts: `API_KEYS` plus the keys file, re-read on `refresh`."""

    def __init__(self, plain: Iterable[str] = (), path: Path | None = None) -> None:
        self.env = env_records(plain)
        self.path = path
        self.from_file: tuple[KeyRecord, ...] = ()
        self._digest: bytes | None = None
        if path is not None:
            self._load(self._read())  # at start a bad file is an error, not a warning

    @property
    def open(self) -> bool:
        """No keys configured at all (local development): every request is let in.

        A keys file with no records is not open: it refuses every key."""
        return not self.env and self.path is None

    @property
    def records(self) -> tuple[KeyRecord, ...]:
        return self.env + self.from_file

    def find(self, key: str) -> KeyRecord | None:
        """The record of a presented key; every record is compared, matched or not,
        so the time taken does not tell which record (or how many) came close."""
        digest = hash_key(key).encode()
        found = None
        for record in self.records:
            if hmac.compare_digest(digest, record.hash.encode()):
                found = record
        return found

    def _read(self) -> bytes:
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise KeysError(f"{self.path}: cannot read: {error.strerror}") from None

    def _load(self, raw: bytes) -> None:
        self.from_file = parse_keys(raw, str(self.path))
        self._digest = hashlib.sha256(raw).digest()
        log.info(
            json.dumps(
                {
                    "event": "api_keys_loaded",
                    "path": str(self.path),
                    "ids": [k.id for k in self.from_file],
                }
            )
        )

    def refresh(self) -> bool:
        """Re-read the file; True when the records changed. A bad file keeps the last
        good records. The whole file is read: at a few KB every few seconds that is
        cheaper than trusting mtimes, which a Secret's symlink swap may not move."""
        if self.path is None:
            return False
        try:
            raw = self._read()
            if hashlib.sha256(raw).digest() == self._digest:
                return False
            before = self.from_file
            self._load(raw)
        except KeysError as error:
            log.error(
                json.dumps(
                    {
                        "event": "api_keys_invalid",
                        "path": str(self.path),
                        "error": str(error),
                        "kept": [k.id for k in self.from_file],
                    }
                )
            )
            return False
        return self.from_file != before


async def follow(ring: KeyRing, interval_s: float, changed: Callable[[], Awaitable[None]]) -> None:
    """Poll the keys file forever; call `changed` after the records changed."""
    while True:
        await asyncio.sleep(interval_s)
        if await asyncio.to_thread(ring.refresh):
            await changed()
