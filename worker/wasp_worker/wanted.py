"""The sessions that should be running, kept on the shard's volume.

A slot becomes wanted when its session logs in (CONNECTED) and stays wanted until
someone logs it out or destroys it through the API. The set is a small JSON file
(`WORKDIR/wanted.json`), replaced atomically on every change, so after a restart,
a crash, a redeploy or a lease handover the worker that holds the shard brings
every wanted session back from its stored auth, without anyone calling the API.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

from wasp.slots import Slot, SlotError


class WantedSessions:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._slots: set[Slot] = set()
        self._lock = asyncio.Lock()  # one writer at a time: the file is replaced whole

    def load(self) -> list[str]:
        """Read the file (at start, before the loop serves anyone); the entries it refused."""
        try:
            listed = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            return [f"{self.path.name} is not JSON"]
        refused = []
        for text in listed if isinstance(listed, list) else []:
            try:
                self._slots.add(Slot.parse(str(text)))
            except SlotError:
                refused.append(str(text)[:64])
        return refused

    def __contains__(self, slot: object) -> bool:
        return slot in self._slots

    def __iter__(self) -> Iterator[Slot]:
        return iter(sorted(self._slots))

    def __len__(self) -> int:
        return len(self._slots)

    async def add(self, slot: Slot) -> None:
        if slot not in self._slots:
            self._slots.add(slot)
            await self._save()

    async def discard(self, slot: Slot) -> None:
        if slot in self._slots:
            self._slots.discard(slot)
            await self._save()

    async def _save(self) -> None:
        async with self._lock:
            listed = [str(slot) for slot in sorted(self._slots)]
            await asyncio.to_thread(_replace, self.path, json.dumps(listed))


def _replace(path: Path, text: str) -> None:
    """Write beside, flush to disk, rename over: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with partial.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
