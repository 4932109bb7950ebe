"""The simulator backend: deterministic, in-process sessions for tests, demos and load.

Not WhatsApp. A started slot shows a QR code that rotates every
`qr_interval_s`; `scan(slot)` logs it in, as a phone scanning the code would.
A slot that logged in once resumes without a QR, as a stored session does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import segno

from wasp.slots import Slot
from wasp_worker.backends.base import OnStatus, StatusEvent


def qr_data_url(payload: str) -> str:
    return str(segno.make_qr(payload).png_data_uri(scale=6))


@dataclass
class _Session:
    on_status: OnStatus
    rotation: int = 0
    rotor: asyncio.Task[None] | None = None
    connected: bool = False


@dataclass
class SimulatorBackend:
    """Sessions whose "auth state" is a small JSON file under `work_dir/auth/<slot>/`."""

    work_dir: Path
    qr_interval_s: float = 20.0
    sessions: dict[Slot, _Session] = field(default_factory=dict)

    def _auth_file(self, slot: Slot) -> Path:
        return self.work_dir / "auth" / str(slot) / "simulator.json"

    def qr_payload(self, slot: Slot) -> str:
        session = self.sessions[slot]
        return f"wasp-simulator:{slot}:{session.rotation}"

    async def start(self, slot: Slot, on_status: OnStatus) -> None:
        session = _Session(on_status)
        self.sessions[slot] = session
        if self._auth_file(slot).exists():
            session.connected = True
            await on_status(StatusEvent(slot, "CONNECTED"))
            return
        await on_status(StatusEvent(slot, "CONNECTING", qr=qr_data_url(self.qr_payload(slot))))
        session.rotor = asyncio.create_task(self._rotate(slot, session))

    async def _rotate(self, slot: Slot, session: _Session) -> None:
        while not session.connected:
            await asyncio.sleep(self.qr_interval_s)
            session.rotation += 1
            qr = qr_data_url(self.qr_payload(slot))
            await session.on_status(StatusEvent(slot, "CONNECTING", qr=qr))

    async def scan(self, slot: Slot) -> bool:
        """Log the slot in as if its QR was scanned; False when no QR is showing."""
        session = self.sessions.get(slot)
        if session is None or session.connected:
            return False
        session.connected = True
        if session.rotor is not None:
            session.rotor.cancel()
        auth = self._auth_file(slot)
        auth.parent.mkdir(parents=True, exist_ok=True)
        auth.write_text(json.dumps({"slot": str(slot), "paired": True}))
        await session.on_status(StatusEvent(slot, "CONNECTED"))
        return True

    async def stop(self, slot: Slot) -> None:
        session = self.sessions.pop(slot, None)
        if session is None:
            return
        if session.rotor is not None:
            session.rotor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.rotor
        await session.on_status(StatusEvent(slot, "DISCONNECTED", reason="stopped"))

    async def logout(self, slot: Slot) -> None:
        await self.stop(slot)
        self._auth_file(slot).unlink(missing_ok=True)

    async def close(self) -> None:
        for slot in list(self.sessions):
            await self.stop(slot)
