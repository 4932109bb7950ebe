"""A WhatsApp account's proxy: where its session connects from.

Hundreds of accounts behind one address is a ban risk, so an account may name
a proxy in the shared config (`Account.proxy`): `http://host:port` or
`socks5://host:port`, never with credentials, since the shared config is a
ConfigMap every pod reads and the master serves it back. Credentials, when the
proxy wants them, are kept apart like webhook secrets (`ProxyCredentials`,
one entry per slot in a 0600 file or a Secret) and joined to the URL only when
the session connects (`ProxyTarget.address`).

Anything said about a proxy (logs, statuses) names it by `endpoint` alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import quote

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel

from wasp.slots import SlotId

SCHEMES = ("http", "socks5")
# A host name, IPv4 address or bracketed IPv6 address, and a port; nothing else
# (no path, no user info: credentials never enter the shared config).
# The port is 1-65535 in the pattern itself: a URL the schema accepts is one we accept.
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]"
_PORT = r"[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]"
PROXY_PATTERN = rf"^(http|socks5)://({_HOST}):({_PORT})$"
_PARSE = re.compile(PROXY_PATTERN)


def _explain(value: object) -> object:
    """The two likely mistakes, named before the pattern's generic refusal."""
    if isinstance(value, str):
        scheme, found, rest = value.partition("://")
        if found and scheme not in SCHEMES:
            raise ValueError(f"proxy scheme must be http or socks5, not {scheme[:20]!r}")
        if "@" in rest:  # the message never repeats the value: it holds a password
            raise ValueError(
                "proxy credentials do not belong in the shared config: give the URL as "
                "scheme://host:port and the credentials in the proxy credentials Secret"
            )
    return value


ProxyUrl = Annotated[
    str,
    Field(
        pattern=PROXY_PATTERN,
        max_length=280,
        description=(
            "The proxy this account's session connects through: `http://host:port` or "
            "`socks5://host:port`, without credentials (those are kept in the proxy "
            "credentials Secret). Unset: the session connects directly."
        ),
        examples=["socks5://10.0.0.7:1080"],
    ),
    BeforeValidator(_explain),
]


class Credentials(BaseModel):
    """A proxy's user name and password for one slot: secret, never logged or served."""

    model_config = ConfigDict(extra="forbid", strict=True)

    username: str = Field(min_length=1, max_length=255)
    password: str = Field(max_length=1024)


class ProxyCredentials(RootModel[dict[SlotId, Credentials]]):
    """The proxy credentials file: slot -> credentials."""


@dataclass(frozen=True)
class ProxyTarget:
    """A slot's proxy as a session uses it; its repr never shows the credentials."""

    url: str  # validated ProxyUrl, without credentials
    credentials: Credentials | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def host(self) -> str:
        match = _PARSE.match(self.url)
        assert match is not None, "ProxyTarget.url is a validated ProxyUrl"
        return match.group(2).strip("[]")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def endpoint(self) -> str:
        """`host:port`: how statuses and logs name the proxy."""
        return self.url.split("://", 1)[1]

    def address(self) -> str:
        """The URL with credentials, for the connect alone: SECRET."""
        if self.credentials is None:
            return self.url
        user = quote(self.credentials.username, safe="")
        password = quote(self.credentials.password, safe="")
        return f"{self.scheme}://{user}:{password}@{self.endpoint}"
