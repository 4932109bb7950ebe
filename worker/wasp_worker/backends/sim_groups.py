"""The simulator's groups and contacts: what the simulated WhatsApp server keeps of them.

Kept in a file every worker on the machine shares (next to the server ledger), so a
group made on one shard is seen by its members on every other: groups with their
participants and admins, invite codes, and each account's block list. The directory
of numbers on WhatsApp is the simulator's accounts (every number `phone_of` gives a
slot). Simplified, stated once here: only admins rename, change participants and
manage the invite link (WhatsApp's "only admins can edit" setting, always on); a
blocked account's messages are accepted from it and never delivered (it sees one tick).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from pathlib import Path

from wasp.slots import Slot
from wasp_worker.backends.groups import (
    GroupInfo,
    GroupRefused,
    NumberCheck,
    Participant,
    ParticipantAction,
    ParticipantResult,
    Picture,
    UserInfo,
)
from wasp_worker.backends.shared_file import SharedFile

INVITE_PREFIX = "https://chat.whatsapp.com/"
ABOUT = "Hey there! I am using WhatsApp."


def _phone_of(slot: Slot) -> str:
    from wasp_worker.backends.simulator import phone_of  # the simulator imports this module

    return phone_of(slot)


def _is_account(jid: str) -> bool:
    from wasp_worker.backends.simulator import slot_of

    user, _, server = jid.partition("@")
    return server == "s.whatsapp.net" and slot_of(user) is not None


def _jid(slot: Slot) -> str:
    return f"{_phone_of(slot)}@s.whatsapp.net"


class GroupServer(SharedFile):
    """The server's groups and block lists in one SQLite file; each change is one
    transaction, so workers racing on a group see one order."""

    FILE = "simulator-groups.sqlite3"

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS groups (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "group_id TEXT UNIQUE, name TEXT NOT NULL, owner TEXT NOT NULL, "
        "created_at INTEGER NOT NULL, invite TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS members (group_id TEXT NOT NULL, jid TEXT NOT NULL, "
        "admin INTEGER NOT NULL DEFAULT 0, super INTEGER NOT NULL DEFAULT 0, "
        "PRIMARY KEY (group_id, jid));"
        "CREATE TABLE IF NOT EXISTS blocks (account TEXT NOT NULL, jid TEXT NOT NULL, "
        "PRIMARY KEY (account, jid));"
    )

    @staticmethod
    def _info(db: sqlite3.Connection, group_id: str) -> GroupInfo:
        row = db.execute(
            "SELECT name, owner, created_at FROM groups WHERE group_id=?", (group_id,)
        ).fetchone()
        members = db.execute(
            "SELECT jid, admin, super FROM members WHERE group_id=? ORDER BY jid", (group_id,)
        ).fetchall()
        return GroupInfo(
            group_id=group_id,
            name=row[0],
            owner=row[1],
            created_at=row[2],
            participants=tuple(Participant(j, bool(a), bool(s)) for j, a, s in members),
        )

    @staticmethod
    def _member(db: sqlite3.Connection, group_id: str, account: str) -> tuple[bool, bool]:
        """(admin, super admin) of a member; 404 for a group the account is not in (as
        WhatsApp hides a group's details from those outside it)."""
        row = db.execute(
            "SELECT admin, super FROM members WHERE group_id=? AND jid=?", (group_id, account)
        ).fetchone()
        if row is None:
            raise GroupRefused(404, f"no group {group_id} with this account in it")
        return bool(row[0]), bool(row[1])

    def _admin(self, db: sqlite3.Connection, group_id: str, account: str) -> None:
        admin, _ = self._member(db, group_id, account)
        if not admin:
            raise GroupRefused(409, f"the account is not an admin of {group_id}")

    def joined(self, account: str) -> list[GroupInfo]:
        def work(db: sqlite3.Connection) -> list[GroupInfo]:
            ids = db.execute(
                "SELECT group_id FROM members WHERE jid=? ORDER BY group_id", (account,)
            ).fetchall()
            return [self._info(db, group_id) for (group_id,) in ids]

        result: list[GroupInfo] = self._transaction(work)
        return result

    def info(self, account: str, group_id: str) -> GroupInfo:
        def work(db: sqlite3.Connection) -> GroupInfo:
            self._member(db, group_id, account)
            return self._info(db, group_id)

        result: GroupInfo = self._transaction(work)
        return result

    def create(self, account: str, name: str, participants: list[str]) -> GroupInfo:
        def work(db: sqlite3.Connection) -> GroupInfo:
            seq = db.execute(
                "INSERT INTO groups (name, owner, created_at, invite) VALUES (?, ?, ?, ?)",
                (name, account, int(time.time()), secrets.token_urlsafe(16)),
            ).lastrowid
            group_id = f"1203630{seq:011d}@g.us"
            db.execute("UPDATE groups SET group_id=? WHERE seq=?", (group_id, seq))
            db.execute("INSERT INTO members VALUES (?, ?, 1, 1)", (group_id, account))
            for jid in participants:  # numbers not on WhatsApp are not added, as WhatsApp does
                if jid != account and _is_account(jid):
                    db.execute("INSERT OR IGNORE INTO members VALUES (?, ?, 0, 0)", (group_id, jid))
            return self._info(db, group_id)

        result: GroupInfo = self._transaction(work)
        return result

    def rename(self, account: str, group_id: str, name: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            self._admin(db, group_id, account)
            db.execute("UPDATE groups SET name=? WHERE group_id=?", (name, group_id))

        self._transaction(work)

    def participants(
        self, account: str, group_id: str, action: ParticipantAction, jids: list[str]
    ) -> list[ParticipantResult]:
        def one(db: sqlite3.Connection, jid: str) -> str:
            present = db.execute(
                "SELECT 1 FROM members WHERE group_id=? AND jid=?", (group_id, jid)
            ).fetchone()
            if action == "add":
                if not _is_account(jid):
                    return "not_on_whatsapp"
                if present:
                    return "already_a_participant"
                db.execute("INSERT INTO members VALUES (?, ?, 0, 0)", (group_id, jid))
                return "ok"
            if not present:
                return "not_a_participant"
            if action == "remove":
                db.execute("DELETE FROM members WHERE group_id=? AND jid=?", (group_id, jid))
            else:
                db.execute(
                    "UPDATE members SET admin=? WHERE group_id=? AND jid=?",
                    (int(action == "promote"), group_id, jid),
                )
            return "ok"

        def work(db: sqlite3.Connection) -> list[ParticipantResult]:
            self._admin(db, group_id, account)
            return [ParticipantResult(jid, one(db, jid)) for jid in jids]

        result: list[ParticipantResult] = self._transaction(work)
        return result

    def invite(self, account: str, group_id: str, revoke: bool) -> str:
        def work(db: sqlite3.Connection) -> str:
            self._admin(db, group_id, account)
            if revoke:
                db.execute(
                    "UPDATE groups SET invite=? WHERE group_id=?",
                    (secrets.token_urlsafe(16), group_id),
                )
            (code,) = db.execute(
                "SELECT invite FROM groups WHERE group_id=?", (group_id,)
            ).fetchone()
            return INVITE_PREFIX + str(code)

        result: str = self._transaction(work)
        return result

    def leave(self, account: str, group_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            self._member(db, group_id, account)
            db.execute("DELETE FROM members WHERE group_id=? AND jid=?", (group_id, account))

        self._transaction(work)

    def set_blocked(self, account: str, jid: str, blocked: bool) -> None:
        def work(db: sqlite3.Connection) -> None:
            if blocked:
                db.execute("INSERT OR IGNORE INTO blocks VALUES (?, ?)", (account, jid))
            else:
                db.execute("DELETE FROM blocks WHERE account=? AND jid=?", (account, jid))

        self._transaction(work)

    def blocks(self, account: str, jid: str) -> bool:
        with self._lock:
            row = (
                self._open()
                .execute("SELECT 1 FROM blocks WHERE account=? AND jid=?", (account, jid))
                .fetchone()
            )
        return row is not None


class SimulatorGroups:
    """The simulator backend's `GroupsAndContacts` (mixed into `SimulatorBackend`)."""

    work_dir: Path
    server_dir: Path | None
    _group_server: GroupServer | None = None

    def groups_server(self) -> GroupServer:
        if self._group_server is None:
            self._group_server = GroupServer(self.server_dir or self.work_dir)
        return self._group_server

    async def joined_groups(self, slot: Slot) -> list[GroupInfo]:
        return await asyncio.to_thread(self.groups_server().joined, _jid(slot))

    async def group_info(self, slot: Slot, group_id: str) -> GroupInfo:
        return await asyncio.to_thread(self.groups_server().info, _jid(slot), group_id)

    async def create_group(self, slot: Slot, name: str, participants: list[str]) -> GroupInfo:
        return await asyncio.to_thread(self.groups_server().create, _jid(slot), name, participants)

    async def rename_group(self, slot: Slot, group_id: str, name: str) -> None:
        await asyncio.to_thread(self.groups_server().rename, _jid(slot), group_id, name)

    async def update_participants(
        self, slot: Slot, group_id: str, action: ParticipantAction, participants: list[str]
    ) -> list[ParticipantResult]:
        return await asyncio.to_thread(
            self.groups_server().participants, _jid(slot), group_id, action, participants
        )

    async def invite_link(self, slot: Slot, group_id: str, revoke: bool) -> str:
        return await asyncio.to_thread(self.groups_server().invite, _jid(slot), group_id, revoke)

    async def leave_group(self, slot: Slot, group_id: str) -> None:
        await asyncio.to_thread(self.groups_server().leave, _jid(slot), group_id)

    async def on_whatsapp(self, slot: Slot, numbers: list[str]) -> list[NumberCheck]:
        """The server's directory: a number is on WhatsApp when it is a simulated account's."""
        checks = []
        for number in numbers:
            jid = f"{number}@s.whatsapp.net"
            found = _is_account(jid)
            checks.append(NumberCheck(number, found, jid if found else None))
        return checks

    async def profile_picture(self, slot: Slot, jid: str) -> Picture | None:
        if not _is_account(jid):
            raise GroupRefused(404, f"{jid} is not on WhatsApp")
        return None  # simulated accounts have no pictures

    async def user_info(self, slot: Slot, jid: str) -> UserInfo:
        if not _is_account(jid):
            raise GroupRefused(404, f"{jid} is not on WhatsApp")
        return UserInfo(jid=jid, status=ABOUT, verified_name=None, devices=(jid,))

    async def set_blocked(self, slot: Slot, jid: str, blocked: bool) -> None:
        await asyncio.to_thread(self.groups_server().set_blocked, _jid(slot), jid, blocked)

    async def blocked_by(self, recipient: Slot, sender: Slot) -> bool:
        """Whether `recipient` blocked `sender` (its messages are then never delivered)."""
        return await asyncio.to_thread(self.groups_server().blocks, _jid(recipient), _jid(sender))

    def close_groups(self) -> None:
        if self._group_server is not None:
            self._group_server.close()
