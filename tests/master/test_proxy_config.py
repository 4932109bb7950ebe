"""An account's proxy in the shared config, through the real master: validated, documented,
stored without credentials (a URL carrying them is refused and never echoed)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.master.test_master_http import Stack, stack  # noqa: F401  (the fixture)
from wasp.proxies import PROXY_PATTERN, Credentials, ProxyTarget

SECRET = "hunter2secret"


async def test_a_proxy_is_stored_and_served_as_given(stack: Stack) -> None:  # noqa: F811
    accounts = [{"slot": "A1", "proxy": "socks5://10.0.0.7:1080"}, {"slot": "A2"}]
    assert (await stack.master.put("/api/accounts", json=accounts)).status == 200
    on_disk = json.loads((stack.config_dir / "accounts.json").read_text())
    assert on_disk[0]["proxy"] == "socks5://10.0.0.7:1080"
    assert "proxy" not in on_disk[1]  # unset stays out of the document
    served = (await (await stack.master.get("/api/accounts")).json())["accounts"]
    assert served[0]["proxy"] == "socks5://10.0.0.7:1080"


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        (f"http://alice:{SECRET}@10.0.0.7:3128", "credentials do not belong in the shared config"),
        (f"socks5://{SECRET}@10.0.0.7:1080", "credentials do not belong in the shared config"),
        ("ftp://10.0.0.7:21", "scheme must be http or socks5"),
        ("http://10.0.0.7:65536", "should match pattern"),
        ("http://10.0.0.7", "should match pattern"),
        ("http://10.0.0.7:3128/path", "should match pattern"),
        (3128, "valid string"),
    ],
)
async def test_a_bad_proxy_is_refused_with_the_reason_and_changes_nothing(
    stack: Stack,  # noqa: F811
    proxy: Any,
    reason: str,
) -> None:
    before = (stack.config_dir / "accounts.json").read_bytes()
    response = await stack.master.put("/api/accounts", json=[{"slot": "A1", "proxy": proxy}])
    assert response.status == 400
    text = await response.text()
    assert reason in json.loads(text)["error"]
    assert SECRET not in text  # the refusal never repeats a password
    assert (stack.config_dir / "accounts.json").read_bytes() == before


async def test_openapi_documents_the_proxy_field(stack: Stack) -> None:  # noqa: F811
    document = await (await stack.master.get("/openapi.json")).json()
    found = [
        schema["properties"]["proxy"]
        for schema in document["components"]["schemas"].values()
        if "proxy" in schema.get("properties", {})
    ]
    assert found, "no schema documents proxy"
    text = json.dumps(found[0])
    assert PROXY_PATTERN.replace("\\", "\\\\") in text
    assert "credentials" in text


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("http://proxy.example:8080", True),
        ("socks5://[2001:db8::1]:1080", True),
        ("http://h:1", True),
        ("http://h:0", False),
        ("https://h:443", False),
        ("http://h:08080", False),
        ("http://-h:80", False),
    ],
)
def test_the_pattern_takes_what_the_proxy_settings_take(url: str, valid: bool) -> None:
    assert (re.match(PROXY_PATTERN, url) is not None) is valid


@given(st.integers(min_value=0, max_value=99_999))
def test_the_pattern_takes_exactly_the_ports_1_to_65535(port: int) -> None:
    assert (re.match(PROXY_PATTERN, f"socks5://h:{port}") is not None) is (1 <= port <= 65535)


@given(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
)
def test_the_address_gives_back_any_credentials_to_a_url_parser(user: str, password: str) -> None:
    address = ProxyTarget(
        "http://proxy.example:3128", Credentials(username=user, password=password)
    ).address()
    parts = urlsplit(address)  # the standard library reads it, as Go's url.Parse would
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == (user, password)
    assert (parts.hostname, parts.port) == ("proxy.example", 3128)
