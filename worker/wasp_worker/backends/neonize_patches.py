"""App-state patches that tell WhatsApp a chat was pinned, archived or muted here.

Built as whatsmeow's `appstate.BuildPin`, `BuildArchive` and `BuildMuteAbs` do
(index, version, value and collection of each mutation), as neonize's
`PatchInfo` protobuf for `client.send_app_state`. Imports neonize's protobufs,
so only the cell (and tests) import it. neonize decodes `Timestamp` as
nanoseconds and dereferences it and every mutation's `Version` unchecked (a
missing one aborts the process), so both are always set.
"""

from __future__ import annotations

from neonize.proto.Neonize_pb2 import MutationInfo, PatchInfo
from neonize.proto.waSyncAction.WAWebProtobufSyncAction_pb2 import (
    ArchiveChatAction,
    MuteAction,
    PinAction,
    SyncActionMessageRange,
    SyncActionValue,
)

from wasp_worker.backends.cell_protocol import SetChatSettings
from wasp_worker.backends.neonize_events import MUTED_FOREVER

# whatsmeow's appstate indexes and the versions it sends them with.
PIN, PIN_VERSION = "pin_v1", 5
ARCHIVE, ARCHIVE_VERSION = "archive", 3
MUTE, MUTE_VERSION = "mute", 2


def _pin(chat_id: str, pinned: bool) -> MutationInfo:
    return MutationInfo(
        Index=[PIN, chat_id],
        Version=PIN_VERSION,
        Value=SyncActionValue(pinAction=PinAction(pinned=pinned)),
    )


def _patch(
    kind: PatchInfo.WAPatchName.ValueType, now: float, *mutations: MutationInfo
) -> PatchInfo:
    return PatchInfo(Timestamp=int(now * 1e9), Type=kind, Mutations=list(mutations))


def pin(chat_id: str, pinned: bool, now: float) -> PatchInfo:
    return _patch(PatchInfo.REGULAR_LOW, now, _pin(chat_id, pinned))


def archive(chat_id: str, archived: bool, last_message_at: float | None, now: float) -> PatchInfo:
    """Archiving also unpins, as WhatsApp's apps do."""
    action = ArchiveChatAction(
        archived=archived,
        messageRange=SyncActionMessageRange(lastMessageTimestamp=int(last_message_at or now)),
    )
    mutations = [
        MutationInfo(
            Index=[ARCHIVE, chat_id],
            Version=ARCHIVE_VERSION,
            Value=SyncActionValue(archiveChatAction=action),
        )
    ]
    if archived:
        mutations.append(_pin(chat_id, False))
    return _patch(PatchInfo.REGULAR_LOW, now, *mutations)


def mute(chat_id: str, muted_until: float | None, now: float) -> PatchInfo:
    """Muted until a Unix time (milliseconds on the wire; WhatsApp's -1 for "forever"),
    or unmuted (None, or a time already past)."""
    if muted_until is None or muted_until <= now:
        action = MuteAction(muted=False)
    elif muted_until >= MUTED_FOREVER:
        action = MuteAction(muted=True, muteEndTimestamp=-1)
    else:
        action = MuteAction(muted=True, muteEndTimestamp=int(muted_until * 1000))
    return _patch(
        PatchInfo.REGULAR_HIGH,
        now,
        MutationInfo(
            Index=[MUTE, chat_id], Version=MUTE_VERSION, Value=SyncActionValue(muteAction=action)
        ),
    )


def patches(command: SetChatSettings, now: float) -> list[PatchInfo]:
    """The patches for what the command sets, one per collection kind and setting (a
    patch's mutations must share one collection: pin and archive are `regular_low`,
    mute `regular_high`). Pin goes before archive, whose own unpin then has the last word."""
    found: list[PatchInfo] = []
    if command.pinned is not None:
        found.append(pin(command.chat_id, command.pinned, now))
    if command.archived is not None:
        found.append(archive(command.chat_id, command.archived, command.last_message_at, now))
    if command.mute:
        found.append(mute(command.chat_id, command.muted_until, now))
    return found
