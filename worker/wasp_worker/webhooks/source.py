"""Where the webhooks' inputs come from: the subscriptions in CONFIGDIR, and the
events the worker's changes make.

`Subscriptions` re-reads `webhooks.json`, the secrets file and `accounts.json`
(for each slot's workspace) when they change; a file that does not parse keeps
the last good set and says so in a log line (never with its content).

`WebhookEvents` turns what happened into events. The session's status and QR
reach it through the live feed (`tap`); inbound messages and message states
are for the code that records them to emit, in the same transaction
(`from_inbound`, `from_message_status` with `outbox.add`).
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from wasp.webhooks import Event, EventType, IpAddress, TargetPolicy, WebhooksDocument
from wasp_worker.events import EventLog

SECRETS = "webhook-secrets.json"


def own_addresses() -> list[IpAddress]:
    """This pod's addresses: a subscription pointing at the worker itself is refused."""
    found: set[IpAddress] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(ip_address(str(info[4][0]).split("%", 1)[0]))
    except OSError:
        pass
    return sorted(found, key=str)


class Subscriptions:
    def __init__(self, config_dir: Path, secrets_file: Path | None, log: EventLog) -> None:
        self.document_path = config_dir / "webhooks.json"
        self.secrets_path = secrets_file or config_dir / SECRETS
        self.accounts_path = config_dir / "accounts.json"
        self._log = log
        self._digest = b""
        self._own = own_addresses()
        self.document = WebhooksDocument()
        self.secrets: dict[str, str] = {}
        self.workspaces: dict[str, str] = {}
        self.policy = TargetPolicy.from_allow((), self._own)

    def refresh(self) -> bool:
        """Re-read the files if they changed; True when something changed."""
        raw = [p.read_bytes() if p.exists() else b"" for p in self._paths()]
        digest = hashlib.sha256(b"\0".join(raw)).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            document = WebhooksDocument.model_validate_json(raw[0] or b"{}")
            secrets = json.loads(raw[1] or b"{}")
            accounts = json.loads(raw[2] or b"[]")
        except (ValidationError, ValueError) as error:
            kind = type(error).__name__
            self._log.emit(
                "webhooks_config_invalid", error=kind, kept=len(self.document.subscriptions)
            )
            return False
        self.document = document
        self.secrets = (
            {str(k): str(v) for k, v in secrets.items()} if isinstance(secrets, dict) else {}
        )
        self.workspaces = {
            str(a.get("slot")): str(a.get("ws") or "default")
            for a in accounts
            if isinstance(accounts, list) and isinstance(a, dict)
        }
        self.policy = TargetPolicy.from_allow(document.allow, self._own)
        for subscription in document.subscriptions:
            if subscription.id not in self.secrets:
                self._log.emit("webhook_secret_missing", subscription=subscription.id)
        self._log.emit("webhooks_loaded", subscriptions=[s.id for s in document.subscriptions])
        return True

    def _paths(self) -> tuple[Path, Path, Path]:
        return self.document_path, self.secrets_path, self.accounts_path

    def workspace_of(self, slot: str) -> str:
        return self.workspaces.get(slot, "default")


# The live feed's events that are webhook events, and their webhook type.
LIVE: dict[str, EventType] = {"wa:status": "session.status", "wa:qr": "session.qr"}


class WebhookEvents:
    """Events for the outbox, from what the worker saw."""

    @staticmethod
    def from_live(name: str, payload: dict[str, Any]) -> Event | None:
        """A session's status (with its reason) or QR, from its live event."""
        kind = LIVE.get(name)
        slot = payload.get("slot")
        if kind is None or not isinstance(slot, str):
            return None
        return Event.new(kind, slot, dict(payload))

    @staticmethod
    def from_inbound(fields: dict[str, Any]) -> Event:
        """`message.received`: the inbound fields the live feed's wa:message carries."""
        return Event.new("message.received", fields["slot"], dict(fields))

    @staticmethod
    def from_message_status(
        slot: str, message: dict[str, Any], state: str, reason: str | None = None
    ) -> Event:
        """`message.status`: queued, sent, delivered, read, or failed with its reason."""
        return Event.new("message.status", slot, {**message, "state": state, "reason": reason})


def tap(write: Callable[[list[Event]], None]) -> Callable[[str, dict[str, Any]], None]:
    """A live-feed listener that writes the webhook events among its events."""

    def listen(name: str, payload: dict[str, Any]) -> None:
        event = WebhookEvents.from_live(name, payload)
        if event is not None:
            write([event])

    return listen
