"""`GET/PUT /api/webhooks` on a real master over loopback: validation, target
safety, secrets kept apart and never shown or logged in full, the keys it takes."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.master import key_header, keyed_master
from wasp.webhooks import mask

Client = TestClient[Any, Any]
KEYS = {"admin": ["admin"], "configurer": ["read", "config"], "reader": ["read"]}
PUBLIC = "http://93.184.216.34/hooks"  # a public address: no DNS needed
SUB = {"id": "crm", "url": PUBLIC, "events": ["message.received", "session.status"]}


key = key_header


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[Client]:
    async with keyed_master(tmp_path, KEYS) as client:
        yield client


async def put(client: Client, body: Any, who: str = "admin") -> tuple[int, dict[str, Any]]:
    async with client.put("/api/webhooks", json=body, headers=key(who)) as response:
        return response.status, await response.json()


async def get(client: Client, who: str = "admin") -> dict[str, Any]:
    async with client.get("/api/webhooks", headers=key(who)) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def test_a_new_subscription_gets_a_secret_shown_once_then_masked(
    master: Client, tmp_path: Path
) -> None:
    status, answer = await put(master, {"subscriptions": [SUB]})
    assert status == 200, answer
    secret = answer["secrets"]["crm"]
    assert secret.startswith("whsec_")
    assert answer["webhooks"]["subscriptions"][0]["secret"] == mask(secret)
    shown = await get(master)
    assert (
        shown["webhooks"]["subscriptions"][0]["secret"] == mask(secret) == "whsec_…" + secret[-4:]
    )
    assert secret not in json.dumps(shown)
    config = tmp_path / "config"
    assert secret not in (config / "webhooks.json").read_text()
    secrets_file = config / "webhook-secrets.json"
    assert json.loads(secrets_file.read_text()) == {"crm": secret}
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    # Written once: a second PUT generates nothing and keeps the secret.
    status, again = await put(master, {"subscriptions": [SUB]})
    assert (status, again["secrets"]) == (200, {})
    assert json.loads(secrets_file.read_text()) == {"crm": secret}


async def test_secrets_are_kept_replaced_or_refused(master: Client, tmp_path: Path) -> None:
    _, first = await put(master, {"subscriptions": [SUB]})
    secret = first["secrets"]["crm"]
    secrets_file = tmp_path / "config" / "webhook-secrets.json"
    # What a GET showed, sent back as it was: kept.
    status, _ = await put(master, {"subscriptions": [{**SUB, "secret": mask(secret)}]})
    assert status == 200
    assert json.loads(secrets_file.read_text()) == {"crm": secret}
    # A masked secret that is not the current one: refused, nothing changes.
    status, answer = await put(master, {"subscriptions": [{**SUB, "secret": "whsec_…zzzz"}]})
    assert status == 409, answer
    assert "masked secret" in answer["error"]
    # A new secret replaces it and is not echoed back.
    rotated = "whsec_" + "QUJD" * 8
    status, answer = await put(master, {"subscriptions": [{**SUB, "secret": rotated}]})
    assert (status, answer["secrets"]) == (200, {})
    assert rotated not in json.dumps(answer)
    assert json.loads(secrets_file.read_text()) == {"crm": rotated}
    # A subscription removed: its secret goes too.
    status, _ = await put(master, {"subscriptions": []})
    assert status == 200
    assert json.loads(secrets_file.read_text()) == {}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://10.96.0.1/hook", "private"),
        ("http://172.16.3.4/hook", "private"),
        ("http://192.168.1.10/hook", "private"),
        ("http://100.64.0.7/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
async def test_internal_targets_are_refused_with_the_reason(
    master: Client, tmp_path: Path, url: str, why: str
) -> None:
    status, answer = await put(master, {"subscriptions": [{**SUB, "url": url}]})
    assert status == 403, answer
    assert "subscription crm" in answer["error"], answer
    assert why in answer["error"]
    assert not (tmp_path / "config" / "webhooks.json").exists()


async def test_the_allow_list_permits_internal_targets_and_needs_admin(master: Client) -> None:
    subscription = {**SUB, "url": "http://127.0.0.1:9000/hook"}
    body = {
        "subscriptions": [subscription],
        "allow": ["127.0.0.0/8"],
    }
    status, answer = await put(master, body, who="configurer")
    assert status == 403, answer
    assert "needs admin" in answer["error"]
    status, answer = await put(master, body, who="admin")
    assert status == 200, answer
    # With `allow` unchanged, a config key may edit the subscriptions.
    subscription["events"] = ["session.qr"]
    status, answer = await put(master, body, who="configurer")
    assert status == 200, answer
    # A host name on the list is allowed whatever it resolves to.
    named = {"subscriptions": [{**SUB, "url": "http://localhost:1/x"}], "allow": ["localhost"]}
    assert (await put(master, named))[0] == 200


async def test_only_config_keys_read_or_write_them(master: Client) -> None:
    async with master.get("/api/webhooks", headers=key("reader")) as response:
        assert response.status == 403
    status, _ = await put(master, {"subscriptions": [SUB]}, who="reader")
    assert status == 403
    async with master.get("/api/webhooks") as response:
        assert response.status == 401


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({"subscriptions": [SUB, SUB]}, 409, "listed more than once"),
        ({"subscriptions": [{**SUB, "slots": ["A9-A1"]}]}, 409, "slots"),
        ({"subscriptions": [{**SUB, "events": ["message.sent"]}]}, 400, "events"),
        ({"subscriptions": [{**SUB, "events": []}]}, 400, "events"),
        ({"subscriptions": [{**SUB, "url": "ftp://example.com/x"}]}, 400, "url"),
        ({"subscriptions": [{**SUB, "url": "http://u:p@93.184.216.34/"}]}, 400, "url"),
        ({"subscriptions": [{**SUB, "secret": "whsec_" + "A" * 31}]}, 400, "secret"),
        ({"subscriptions": [SUB], "allow": ["10.0.0.0/99"]}, 409, "CIDR"),
        ({"subscriptions": [{**SUB, "colour": "red"}]}, 400, "colour"),
    ],
)
async def test_invalid_documents_are_refused_with_the_reason(
    master: Client, body: Any, code: int, says: str
) -> None:
    status, answer = await put(master, body)
    assert status == code, answer
    assert says in answer["error"], answer


async def test_no_secret_reaches_the_log(master: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    given = "whsec_" + "c2VjcmV0" * 4
    _, answer = await put(master, {"subscriptions": [SUB, {**SUB, "id": "b", "secret": given}]})
    generated = answer["secrets"]["crm"]
    assert "config_written" in caplog.text
    assert generated not in caplog.text
    assert given not in caplog.text


async def test_the_openapi_document_declares_them(master: Client) -> None:
    async with master.get("/openapi.json") as response:
        document = await response.json()
    operations = document["paths"]["/api/webhooks"]
    assert set(operations) == {"get", "put"}
    body = document["components"]["schemas"]["WebhooksWrite"]
    assert body["properties"]["subscriptions"]["items"]["$ref"].endswith("SubscriptionWrite")
    assert {"403", "409"} <= set(operations["put"]["responses"])
