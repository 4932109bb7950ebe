"""Webhooks, as the master and the workers both see them: what a subscription is,
what an event looks like on the wire, and which targets are safe to call.

The master validates and stores the subscriptions (`PUT /api/webhooks`); each
worker reads them from its CONFIGDIR and delivers the events of its own slots.
Both check a subscription's URL with `check_target`: the master when it is
written, the worker before every delivery (a name's addresses can change).

Secrets are Standard Webhooks secrets (`whsec_` and base64 of 24 to 64 random
bytes). They are stored apart from the subscriptions (a 0600 file locally, a
Kubernetes Secret in a cluster) and shown only masked (`mask`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import secrets
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from wasp.slots import Slot, SlotError, SlotId, SlotRange

EventType = Literal[
    "message.received",
    "message.status",
    "message.edited",
    "message.deleted",
    "message.reaction",
    "message.poll_vote",
    "session.status",
    "session.qr",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "message.received",
    "message.status",
    "message.edited",
    "message.deleted",
    "message.reaction",
    "message.poll_vote",
    "session.status",
    "session.qr",
)
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MASK_PREFIX = SECRET_PREFIX + "…"
SUBSCRIPTION_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def new_secret() -> str:
    """A fresh signing secret, in the form the official libraries take."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def mask(secret: str) -> str:
    """What a secret looks like in any answer: `whsec_…` and its last 4 characters."""
    return MASK_PREFIX + secret[-4:]


def check_secret(value: str) -> str:
    """A secret as stored, or ValueError with the rule (never the value)."""
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"a secret starts with {SECRET_PREFIX!r}")
    try:
        raw = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a secret is {SECRET_PREFIX!r} and base64") from None
    if not 24 <= len(raw) <= 64:
        raise ValueError("a secret is 24 to 64 random bytes (base64 after `whsec_`)")
    return value


def _range(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return SlotRange.from_text(value)
        except SlotError as error:
            raise ValueError(str(error)) from None
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the URL is http:// or https:// with a host")
    if parts.username or parts.password:
        raise ValueError("the URL carries no user or password (the signature authenticates)")
    return value


# The URL's shape in the schema too (so a client's generator and the server agree): scheme,
# a DNS name or an IP literal, a port 0-65535, a path without spaces.
_PORT = r"(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"({_LABEL}(\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\])"
URL_PATTERN = rf"^https?://{_HOST}{_PORT}(/[!-~]*)?$"
SLOTS_PATTERN = r"^[A-Z]{1,8}[1-9][0-9]{0,8}(-[A-Z]{1,8}[1-9][0-9]{0,8})?$"
Url = Annotated[str, Field(max_length=2048, pattern=URL_PATTERN), AfterValidator(_url)]
SlotsText = Annotated[
    str, Field(pattern=SLOTS_PATTERN), AfterValidator(lambda text: str(_range(text)) and text)
]
Workspace = Annotated[str, Field(min_length=1, max_length=128)]


class Subscription(BaseModel):
    """Where one receiver wants which events: its URL, event types, and (optionally)
    the slot ranges or workspaces it covers. No slots and no workspaces: all of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SUBSCRIPTION_ID_PATTERN, description="Names it in logs and metrics.")
    url: Url = Field(description="Where events are POSTed (http or https).")
    events: tuple[EventType, ...] = Field(min_length=1, description="Event types it receives.")
    # minItems in the schema, checked in `_check`: a length check here would add a second
    # error to a bad range's, and the answer should name the range.
    slots: tuple[SlotsText, ...] | None = Field(
        None,
        description="Only these slot ranges (`A1-A50` or one slot `A7`).",
        json_schema_extra={"minItems": 1},
    )
    workspaces: tuple[Workspace, ...] | None = Field(
        None, min_length=1, description="Only slots of these workspaces (accounts' `ws`)."
    )
    enabled: bool = Field(True, description="false: events are kept, none are sent.")

    @model_validator(mode="after")
    def _check(self) -> Subscription:
        if self.slots == ():
            raise ValueError("slots: give at least one range, or leave `slots` out for all")
        if len(set(self.events)) != len(self.events):
            raise ValueError("an event type is listed twice")
        return self

    def ranges(self) -> tuple[SlotRange, ...] | None:
        return None if self.slots is None else tuple(_range(text) for text in self.slots)

    def covers(self, slot: Slot, workspace: str) -> bool:
        ranges = self.ranges()
        if ranges is not None and not any(slot in r for r in ranges):
            return False
        return self.workspaces is None or workspace in self.workspaces

    def wants(self, event_type: str, slot: Slot, workspace: str) -> bool:
        return event_type in self.events and self.covers(slot, workspace)


class WebhooksDocument(BaseModel):
    """`webhooks.json` in the shared config: the subscriptions and the targets allowed
    although they are internal (CIDRs like `10.1.0.0/16`, or host names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscriptions: tuple[Subscription, ...] = ()
    allow: tuple[str, ...] = Field(
        (), description="Internal targets allowed anyway: CIDRs or exact host names."
    )

    @model_validator(mode="after")
    def _unique(self) -> WebhooksDocument:
        ids = [s.id for s in self.subscriptions]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"subscription id listed more than once: {', '.join(twice)}")
        TargetPolicy.from_allow(self.allow)
        return self


class Event(BaseModel):
    """One event as a receiver gets it (the POST body); `id` is also `webhook-id`,
    the same on every attempt, so a receiver drops the repeats of an at-least-once
    delivery by it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^evt_[0-9a-f]{32}$")
    type: EventType
    slot: SlotId
    timestamp: datetime
    data: dict[str, Any]

    @classmethod
    def new(cls, type: EventType, slot: Slot | str, data: dict[str, Any]) -> Event:
        return cls(
            id="evt_" + uuid.uuid4().hex,
            type=type,
            slot=str(slot),
            timestamp=datetime.now(UTC),
            data=data,
        )


class UnsafeTarget(ValueError):
    """A URL whose host is (or resolves to) an address webhooks may not call."""


def _why_internal(address: IpAddress) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives there)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private or address in ipaddress.ip_network("100.64.0.0/10"):
        return "private (cluster and node ranges)"
    if address.is_reserved:
        return "reserved"
    return None


class TargetPolicy:
    """Which addresses a delivery may reach: public ones, the allow-list, never this
    process's own addresses (`own`) unless an allow-list entry names them."""

    def __init__(
        self,
        networks: Iterable[IpNetwork] = (),
        hosts: Iterable[str] = (),
        own: Iterable[IpAddress] = (),
    ) -> None:
        self.networks = tuple(networks)
        self.hosts = frozenset(h.lower().rstrip(".") for h in hosts)
        self.own = frozenset(own)

    @classmethod
    def from_allow(cls, allow: Iterable[str], own: Iterable[IpAddress] = ()) -> TargetPolicy:
        networks: list[IpNetwork] = []
        hosts: list[str] = []
        for entry in allow:
            if any(c in entry for c in "/:") or entry.replace(".", "").isdigit():
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"allow: {entry[:64]!r} is not a CIDR") from None
            elif entry and len(entry) <= 253:
                hosts.append(entry)
            else:
                raise ValueError("allow: an entry is a CIDR or a host name")
        return cls(networks, hosts, own)

    def refusal(self, host: str, address: IpAddress) -> str | None:
        """Why this address of this host may not be called, or None when it may."""
        if host.lower().rstrip(".") in self.hosts or any(address in n for n in self.networks):
            return None
        if address in self.own:
            return "this worker itself"
        return _why_internal(address)


async def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address the host resolves to (an IP literal is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UnsafeTarget(f"host {host[:64]!r} does not resolve: {error.strerror}") from None
    return sorted(
        {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}, key=str
    )


async def check_target(url: str, policy: TargetPolicy) -> list[IpAddress]:
    """The URL's addresses when every one is safe; UnsafeTarget naming the first that is not.

    Every address counts: a name with one public and one internal address could be
    answered by either."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolve(host, port)
    for address in addresses:
        why = policy.refusal(host, address)
        if why is not None:
            raise UnsafeTarget(
                f"{host[:64]} resolves to {address}, {why}: refused unless `allow` lists it"
            )
    return addresses
