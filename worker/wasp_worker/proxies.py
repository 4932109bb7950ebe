"""Which proxy a slot's session connects through, read at every connect.

The account's `proxy` comes from the shared config (CONFIGDIR/accounts.json),
its credentials, if any, from the proxy credentials file (a 0600 file locally,
a mounted Secret in a cluster). Both are read again at each connect, so an
edited proxy applies at the session's next (re)connect.

An account whose `proxy` is present but not a valid proxy URL is never
connected directly: that would expose the shared address the proxy exists to
avoid (`ProxyInvalid`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from wasp.proxies import Credentials, ProxyCredentials, ProxyTarget, ProxyUrl
from wasp.slots import Slot
from wasp_worker.warmup import read_list

_URL: TypeAdapter[str] = TypeAdapter(ProxyUrl)
PROBE_TIMEOUT_S = 5.0
ProxyFor = Callable[[Slot], ProxyTarget | None]  # blocking: called in a thread
CREDENTIALS_FILE = "proxy-credentials.json"  # in CONFIGDIR unless PROXY_CREDENTIALS_FILE says


class ProxyInvalid(Exception):
    """The account names a proxy that is not a valid proxy URL."""


class ProxyLookup:
    def __init__(self, config_dir: Path, credentials_file: Path | None = None) -> None:
        self.config_dir = config_dir
        self.credentials_file = credentials_file

    def __call__(self, slot: Slot) -> ProxyTarget | None:
        """The slot's proxy, None when it has none; blocking file reads (run it in a thread)."""
        for account in read_list(self.config_dir / "accounts.json"):
            if account.get("slot") != str(slot) or account.get("proxy") is None:
                continue
            try:
                url = _URL.validate_python(account["proxy"])
            except ValidationError:
                raise ProxyInvalid(str(slot)) from None
            return ProxyTarget(url, self._credentials().get(slot))
        return None

    def _credentials(self) -> dict[Slot, Credentials]:
        if self.credentials_file is None or not self.credentials_file.exists():
            return {}
        try:
            data = json.loads(self.credentials_file.read_text() or "{}")
            return dict(ProxyCredentials.model_validate(data).root)
        except (OSError, ValueError):
            return {}  # unreadable: the proxy refuses the connect, and says so


async def probe(proxy: ProxyTarget, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """One TCP connect to the proxy: None when it answers, else why not (an error class
    name, never an address with credentials)."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(proxy.host, proxy.port), timeout_s
        )
    except TimeoutError:
        return "timeout"
    except (OSError, socket.gaierror) as error:
        return type(error).__name__
    writer.close()
    return None
