"""Groups and contacts on the neonize side: every request through a real cell (offline,
so never logged in) answers a clear not-logged-in refusal and leaves the cell alive, and
neonize's protobuf answers convert as WhatsApp means them (real protobuf objects)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from neonize.proto import Neonize_pb2 as proto
from wasp_worker.backends.groups import (
    GroupInfo,
    GroupRefused,
    NumberCheck,
    Participant,
    ParticipantResult,
    Picture,
    UserInfo,
)
from wasp_worker.backends.neonize import NeonizeBackend
from wasp_worker.backends.neonize_groups import (
    group_info,
    number_checks,
    participant_results,
    picture,
    user_info,
)

from tests.worker.test_neonize_backend import A1, Recorder

GROUP = "120363025246125486@g.us"
PEER = "5511999999999@s.whatsapp.net"


def jid(text: str, device: int = 0) -> proto.JID:
    user, _, server = text.partition("@")
    return proto.JID(User=user, Server=server, Device=device)


OPERATIONS: dict[str, Callable[[NeonizeBackend], Awaitable[Any]]] = {
    "groups": lambda b: b.joined_groups(A1),
    "group": lambda b: b.group_info(A1, GROUP),
    "createGroup": lambda b: b.create_group(A1, "Team", [PEER]),
    "renameGroup": lambda b: b.rename_group(A1, GROUP, "Team 2"),
    "groupParticipants": lambda b: b.update_participants(A1, GROUP, "add", [PEER]),
    "groupInvite": lambda b: b.invite_link(A1, GROUP, True),
    "leaveGroup": lambda b: b.leave_group(A1, GROUP),
    "contactsCheck": lambda b: b.on_whatsapp(A1, ["5511999999999"]),
    "contactPicture": lambda b: b.profile_picture(A1, PEER),
    "contactInfo": lambda b: b.user_info(A1, PEER),
    "blockContact": lambda b: b.set_blocked(A1, PEER, True),
    "unblockContact": lambda b: b.set_blocked(A1, PEER, False),
}


async def test_every_request_through_a_real_cell_says_the_session_is_not_logged_in(
    tmp_path: Path,
) -> None:
    seen = Recorder()
    backend = NeonizeBackend(tmp_path, sleep=seen.sleep)
    try:
        await backend.start(A1, seen.on_status)
        await seen.wait_for(lambda: len(seen.delays) >= 1)  # offline: the connect ended
        backend.sessions[A1].connected = True  # as if still up: the cell must answer itself
        for operation, call in OPERATIONS.items():
            with pytest.raises(GroupRefused) as refused:
                await call(backend)
            assert refused.value.status == 409, operation
            assert refused.value.reason == f"{operation}: not_logged_in"
        assert backend.cells[0].process.is_alive()
        # A session the backend knows is down is refused before any cell is asked.
        backend.sessions[A1].connected = False
        asked = backend._requests
        with pytest.raises(GroupRefused, match="groups: not_logged_in"):
            await backend.joined_groups(A1)
        assert backend._requests == asked
    finally:
        await backend.close()


def test_group_info_names_members_by_phone_and_marks_admins() -> None:
    info = proto.GroupInfo(
        JID=jid(GROUP),
        OwnerJID=jid("98765@lid"),
        OwnerPN=jid("5511000000001@s.whatsapp.net"),
        GroupName=proto.GroupName(Name="Team"),
        GroupCreated=1_700_000_000,
        Participants=[
            proto.GroupParticipant(
                JID=jid("98765@lid"),
                PhoneNumber=jid("5511000000001@s.whatsapp.net"),
                IsAdmin=True,
                IsSuperAdmin=True,
            ),
            proto.GroupParticipant(JID=jid("5511000000002@s.whatsapp.net"), IsAdmin=True),
            proto.GroupParticipant(JID=jid("5511000000003@s.whatsapp.net")),
            # whatsmeow sets IsAdmin for a super admin too; one without it is still an admin.
            proto.GroupParticipant(JID=jid("5511000000004@s.whatsapp.net"), IsSuperAdmin=True),
        ],
    )
    assert group_info(info) == GroupInfo(
        group_id=GROUP,
        name="Team",
        owner="5511000000001@s.whatsapp.net",
        created_at=1_700_000_000,
        participants=(
            Participant("5511000000001@s.whatsapp.net", admin=True, super_admin=True),
            Participant("5511000000002@s.whatsapp.net", admin=True, super_admin=False),
            Participant("5511000000003@s.whatsapp.net", admin=False, super_admin=False),
            Participant("5511000000004@s.whatsapp.net", admin=True, super_admin=True),
        ),
    )
    bare = group_info(proto.GroupInfo(JID=jid(GROUP)))
    assert (bare.name, bare.owner, bare.created_at, bare.participants) == ("", None, None, ())


def test_participant_changes_carry_whatsapps_code_per_participant() -> None:
    changed = [
        proto.GroupParticipant(JID=jid("5511000000002@s.whatsapp.net"), Error=0),
        proto.GroupParticipant(JID=jid("5511000000003@s.whatsapp.net"), Error=409),
        proto.GroupParticipant(JID=jid("5511000000004@s.whatsapp.net"), Error=403),
        proto.GroupParticipant(JID=jid("5511000000005@s.whatsapp.net"), Error=500),
    ]
    assert participant_results(changed) == (
        ParticipantResult("5511000000002@s.whatsapp.net", "ok"),
        ParticipantResult("5511000000003@s.whatsapp.net", "already_a_participant"),
        ParticipantResult("5511000000004@s.whatsapp.net", "refused_by_privacy"),
        ParticipantResult("5511000000005@s.whatsapp.net", "error_500"),
    )


def test_number_checks_answer_the_number_asked() -> None:
    responses = [
        proto.IsOnWhatsAppResponse(Query="+5511999999999", JID=jid(PEER), IsIn=True),
        proto.IsOnWhatsAppResponse(
            Query="+15550001111", JID=jid("15550001111@s.whatsapp.net"), IsIn=False
        ),
    ]
    assert number_checks(responses) == (
        NumberCheck("5511999999999", True, PEER),
        NumberCheck("15550001111", False, None),
    )


def test_user_info_takes_the_entry_of_the_jid_asked() -> None:
    entry = proto.UserInfo(Status="At work", Devices=[jid(PEER), jid(PEER, device=3)])
    entry.VerifiedName.Details.verifiedName = "Acme Ltd"
    found = [
        proto.GetUserInfoSingleReturnFunction(
            JID=jid("5511000000009@s.whatsapp.net"), UserInfo=proto.UserInfo(Status="other")
        ),
        proto.GetUserInfoSingleReturnFunction(JID=jid(PEER), UserInfo=entry),
    ]
    assert user_info(PEER, found) == UserInfo(
        jid=PEER,
        status="At work",
        verified_name="Acme Ltd",
        devices=(PEER, "5511999999999:3@s.whatsapp.net"),
    )
    assert user_info(PEER, []) == UserInfo(PEER, None, None, ())


def test_a_picture_without_url_is_none() -> None:
    assert picture(proto.ProfilePictureInfo()) is None
    shown = proto.ProfilePictureInfo(URL="https://pps.whatsapp.net/v/t61/x.jpg", ID="1700000")
    assert picture(shown) == Picture("https://pps.whatsapp.net/v/t61/x.jpg", "1700000")
