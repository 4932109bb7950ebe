"""Groups and contacts as WhatsApp answers them: what a backend that can do them implements.

A backend either implements `GroupsAndContacts` whole or not at all: the worker
answers 501 naming the operation for one that does not, never a silent no-op.
Every method needs the slot's session logged in (the worker checks first) and
raises `GroupRefused` for what WhatsApp refuses (no such group, not an admin).
JIDs are "user@server" strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from wasp.slots import Slot

ParticipantAction = Literal["add", "remove", "promote", "demote"]


@dataclass(frozen=True)
class Participant:
    jid: str
    admin: bool
    super_admin: bool  # the group's creator (WhatsApp's "superadmin")


@dataclass(frozen=True)
class GroupInfo:
    group_id: str
    name: str
    owner: str | None  # who created it, when WhatsApp says
    created_at: int | None  # Unix seconds
    participants: tuple[Participant, ...]


@dataclass(frozen=True)
class ParticipantResult:
    """What one participant change did: `ok`, or WhatsApp's reason (not_on_whatsapp,
    not_a_participant, already_a_participant, ...)."""

    jid: str
    outcome: str


@dataclass(frozen=True)
class NumberCheck:
    number: str
    on_whatsapp: bool
    jid: str | None  # the account's JID when on WhatsApp


@dataclass(frozen=True)
class Picture:
    url: str
    picture_id: str


@dataclass(frozen=True)
class UserInfo:
    jid: str
    status: str | None  # the "about" text
    verified_name: str | None  # a business account's verified name
    devices: tuple[str, ...]  # the device JIDs WhatsApp lists


class GroupRefused(Exception):
    """WhatsApp refused the operation; `status` 404 (no such group for the account) or 409
    (the account may not: not an admin, not a participant)."""

    def __init__(self, status: Literal[404, 409], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@runtime_checkable
class GroupsAndContacts(Protocol):
    """Group and contact operations of a logged-in session."""

    async def joined_groups(self, slot: Slot) -> list[GroupInfo]: ...

    async def group_info(self, slot: Slot, group_id: str) -> GroupInfo: ...

    async def create_group(self, slot: Slot, name: str, participants: list[str]) -> GroupInfo: ...

    async def rename_group(self, slot: Slot, group_id: str, name: str) -> None: ...

    async def update_participants(
        self, slot: Slot, group_id: str, action: ParticipantAction, participants: list[str]
    ) -> list[ParticipantResult]: ...

    async def invite_link(self, slot: Slot, group_id: str, revoke: bool) -> str: ...

    async def leave_group(self, slot: Slot, group_id: str) -> None: ...

    async def on_whatsapp(self, slot: Slot, numbers: list[str]) -> list[NumberCheck]: ...

    async def profile_picture(self, slot: Slot, jid: str) -> Picture | None: ...

    async def user_info(self, slot: Slot, jid: str) -> UserInfo: ...

    async def set_blocked(self, slot: Slot, jid: str, blocked: bool) -> None: ...
