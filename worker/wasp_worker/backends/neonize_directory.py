"""The neonize backend's groups and contacts (`GroupsAndContacts`), mixed into
`NeonizeBackend`: each operation is one typed request to the slot's cell
(`neonize_groups` runs it there) and its typed answer.

A cell's refusal becomes `GroupRefused`: 404 when whatsmeow says the group is not
found or the account is not in it, 409 otherwise (not logged in, not an admin,
WhatsApp's other reasons, which the error carries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from wasp.slots import Slot
from wasp_worker.backends.cell_protocol import (
    CheckNumbers,
    CreateGroup,
    GetGroupInfo,
    GetInviteLink,
    GetPicture,
    GetUserInfo,
    GroupsCommand,
    GroupsValue,
    JoinedGroups,
    LeaveGroup,
    RenameGroup,
    SetBlocked,
    UpdateParticipants,
)
from wasp_worker.backends.groups import (
    GroupInfo,
    GroupRefused,
    NumberCheck,
    ParticipantAction,
    ParticipantResult,
    Picture,
    UserInfo,
)

T = TypeVar("T")
# whatsmeow's words for a group the account cannot see (ErrGroupNotFound, ErrNotInGroup...).
NOT_FOUND_HINTS = ("not found", "not-found", "notingroup", "not in group", "not a participant")


def refusal(operation: str, error: str) -> GroupRefused:
    text = error.lower()
    if any(hint in text for hint in NOT_FOUND_HINTS):
        return GroupRefused(404, f"{operation}: {error}")
    return GroupRefused(409, f"{operation}: {error}")


def _typed(value: GroupsValue, kind: type[T], operation: str) -> T:
    if not isinstance(value, kind):
        raise RuntimeError(f"{operation}: the cell answered {type(value).__name__}")
    return value


class NeonizeGroups:
    """`GroupsAndContacts` through the slot's cell."""

    async def _groups(
        self, slot: Slot, operation: str, make: Callable[[int], GroupsCommand]
    ) -> GroupsValue:
        """Ask the slot's cell; `NeonizeBackend` has the cells."""
        raise NotImplementedError

    async def joined_groups(self, slot: Slot) -> list[GroupInfo]:
        found = await self._groups(slot, "groups", lambda r: JoinedGroups(r, str(slot)))
        return [_typed(g, GroupInfo, "groups") for g in _typed(found, tuple, "groups")]

    async def group_info(self, slot: Slot, group_id: str) -> GroupInfo:
        found = await self._groups(slot, "group", lambda r: GetGroupInfo(r, str(slot), group_id))
        return _typed(found, GroupInfo, "group")

    async def create_group(self, slot: Slot, name: str, participants: list[str]) -> GroupInfo:
        made = await self._groups(
            slot, "createGroup", lambda r: CreateGroup(r, str(slot), name, tuple(participants))
        )
        return _typed(made, GroupInfo, "createGroup")

    async def rename_group(self, slot: Slot, group_id: str, name: str) -> None:
        await self._groups(slot, "renameGroup", lambda r: RenameGroup(r, str(slot), group_id, name))

    async def update_participants(
        self, slot: Slot, group_id: str, action: ParticipantAction, participants: list[str]
    ) -> list[ParticipantResult]:
        done = await self._groups(
            slot,
            "groupParticipants",
            lambda r: UpdateParticipants(r, str(slot), group_id, action, tuple(participants)),
        )
        return [_typed(p, ParticipantResult, "groupParticipants") for p in _typed(done, tuple, "")]

    async def invite_link(self, slot: Slot, group_id: str, revoke: bool) -> str:
        link = await self._groups(
            slot, "groupInvite", lambda r: GetInviteLink(r, str(slot), group_id, revoke)
        )
        return _typed(link, str, "groupInvite")

    async def leave_group(self, slot: Slot, group_id: str) -> None:
        await self._groups(slot, "leaveGroup", lambda r: LeaveGroup(r, str(slot), group_id))

    async def on_whatsapp(self, slot: Slot, numbers: list[str]) -> list[NumberCheck]:
        found = await self._groups(
            slot, "contactsCheck", lambda r: CheckNumbers(r, str(slot), tuple(numbers))
        )
        return [_typed(c, NumberCheck, "contactsCheck") for c in _typed(found, tuple, "")]

    async def profile_picture(self, slot: Slot, jid: str) -> Picture | None:
        found = await self._groups(slot, "contactPicture", lambda r: GetPicture(r, str(slot), jid))
        return None if found is None else _typed(found, Picture, "contactPicture")

    async def user_info(self, slot: Slot, jid: str) -> UserInfo:
        found = await self._groups(slot, "contactInfo", lambda r: GetUserInfo(r, str(slot), jid))
        return _typed(found, UserInfo, "contactInfo")

    async def set_blocked(self, slot: Slot, jid: str, blocked: bool) -> None:
        operation = "blockContact" if blocked else "unblockContact"
        await self._groups(slot, operation, lambda r: SetBlocked(r, str(slot), jid, blocked))
