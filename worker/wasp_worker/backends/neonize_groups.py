"""Groups and contacts inside a cell: each `GroupsRequest` as a call of the neonize
client, and neonize's protobuf answers as the backend's plain types.

Runs in the cell only (it calls the client); the conversions are pure functions
of neonize's messages, so tests build real protobuf objects and check them. A
client that is not logged in is never called (whatsmeow's store calls abort the
process then): the answer is `not_logged_in`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, assert_never

from wasp_worker.backends.cell_protocol import (
    CheckNumbers,
    CreateGroup,
    GetGroupInfo,
    GetInviteLink,
    GetPicture,
    GetUserInfo,
    GroupsCommand,
    GroupsResult,
    GroupsValue,
    JoinedGroups,
    LeaveGroup,
    RenameGroup,
    SetBlocked,
    UpdateParticipants,
)
from wasp_worker.backends.groups import (
    GroupInfo,
    NumberCheck,
    Participant,
    ParticipantResult,
    Picture,
    UserInfo,
)
from wasp_worker.backends.neonize_events import jid_text

# WhatsApp's per-participant codes of a participant change (0: done).
PARTICIPANT_OUTCOMES = {
    0: "ok",
    200: "ok",
    403: "refused_by_privacy",
    404: "not_on_whatsapp",
    408: "recently_left",
    409: "already_a_participant",
}


def _has(message: Any, name: str) -> bool:
    try:
        return bool(message.HasField(name))
    except ValueError:
        return False


def participant_jid(participant: Any) -> str:
    """A member's phone JID when WhatsApp gives one (LID-addressed groups name members by
    LID, with the phone number apart), else the JID it names them by."""
    phone = jid_text(participant.PhoneNumber) if _has(participant, "PhoneNumber") else ""
    return phone or jid_text(participant.JID)


def group_info(info: Any) -> GroupInfo:
    """neonize's `GroupInfo` as the backend's."""
    owner = jid_text(info.OwnerPN) if _has(info, "OwnerPN") else ""
    owner = owner or (jid_text(info.OwnerJID) if _has(info, "OwnerJID") else "")
    created = int(info.GroupCreated) if info.GroupCreated else None
    return GroupInfo(
        group_id=jid_text(info.JID),
        name=info.GroupName.Name if _has(info, "GroupName") else "",
        owner=owner or None,
        created_at=created,
        participants=tuple(
            Participant(participant_jid(p), bool(p.IsAdmin or p.IsSuperAdmin), bool(p.IsSuperAdmin))
            for p in info.Participants
        ),
    )


def participant_results(changed: Iterable[Any]) -> tuple[ParticipantResult, ...]:
    """What a participant change did to each, by WhatsApp's code."""
    return tuple(
        ParticipantResult(participant_jid(p), PARTICIPANT_OUTCOMES.get(p.Error, f"error_{p.Error}"))
        for p in changed
    )


def number_checks(responses: Iterable[Any]) -> tuple[NumberCheck, ...]:
    """neonize's `IsOnWhatsAppResponse`s: the number asked (its `Query`, without the +)."""
    return tuple(
        NumberCheck(
            number=r.Query.lstrip("+"),
            on_whatsapp=bool(r.IsIn),
            jid=(jid_text(r.JID) or None) if r.IsIn else None,
        )
        for r in responses
    )


def user_info(jid: str, found: Iterable[Any]) -> UserInfo:
    """The entry of `get_user_info`'s answer for this JID (none: nothing known of it)."""
    for entry in found:
        if jid_text(entry.JID) != jid:
            continue
        info = entry.UserInfo
        verified = ""
        if _has(info, "VerifiedName") and _has(info.VerifiedName, "Details"):
            verified = info.VerifiedName.Details.verifiedName
        return UserInfo(
            jid=jid,
            status=info.Status or None,
            verified_name=verified or None,
            devices=tuple(
                f"{d.User}:{d.Device}@{d.Server}" if d.Device else jid_text(d) for d in info.Devices
            ),
        )
    return UserInfo(jid=jid, status=None, verified_name=None, devices=())


def picture(info: Any) -> Picture | None:
    """A profile picture, None when there is none to see (no URL)."""
    if info is None or not info.URL:
        return None
    return Picture(url=info.URL, picture_id=info.ID)


def answer(client: Any, command: GroupsCommand) -> GroupsResult:
    """Run one request on a client (None: no session) and answer it, never raising."""
    if client is None or not client.is_connected or not client.is_logged_in:
        return GroupsResult(command.request_id, None, "not_logged_in")
    try:
        value = _run(client, command)
    except Exception as error:  # whatsmeow's reason: not an admin, no such group, ...
        return GroupsResult(command.request_id, None, f"{type(error).__name__}: {error}"[:300])
    return GroupsResult(command.request_id, value)


def _run(client: Any, command: GroupsCommand) -> GroupsValue:
    from neonize.utils import build_jid
    from neonize.utils.enum import BlocklistAction, ParticipantChange

    def jid(text: str) -> Any:
        user, _, server = text.partition("@")
        return build_jid(user, server)

    match command:
        case JoinedGroups():
            return tuple(group_info(g) for g in client.get_joined_groups())
        case GetGroupInfo(group_id=group_id):
            return group_info(client.get_group_info(jid(group_id)))
        case CreateGroup(name=name, participants=participants):
            return group_info(client.create_group(name, [jid(p) for p in participants]))
        case RenameGroup(group_id=group_id, name=name):
            client.set_group_name(jid(group_id), name)
            return None
        case UpdateParticipants(group_id=group_id, action=action, participants=participants):
            changed = client.update_group_participants(
                jid(group_id), [jid(p) for p in participants], ParticipantChange(action)
            )
            return participant_results(changed)
        case GetInviteLink(group_id=group_id, revoke=revoke):
            return str(client.get_group_invite_link(jid(group_id), revoke))
        case LeaveGroup(group_id=group_id):
            client.leave_group(jid(group_id))
            return None
        case CheckNumbers(numbers=numbers):
            return number_checks(client.is_on_whatsapp(*(f"+{n}" for n in numbers)))
        case GetPicture(jid=user):
            return picture(client.get_profile_picture(jid(user)))
        case GetUserInfo(jid=user):
            return user_info(user, client.get_user_info(jid(user)))
        case SetBlocked(jid=user, blocked=blocked):
            action = BlocklistAction.BLOCK if blocked else BlocklistAction.UNBLOCK
            client.update_blocklist(jid(user), action)
            return None
        case _:
            assert_never(command)
