"""`/api/proxy-credentials` on a real master over loopback: a slot's proxy user name and
password land where the worker reads them (0600 file), never in an answer or a log; bad
input changes nothing; only config keys may write them."""

from __future__ import annotations

import base64
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from kubernetes import client as kube
from wasp_master.proxy_credentials import SecretCredentialStore
from wasp_master.shared_config import Conflict
from wasp_master.webhook_store import KubeWebhookStore
from wasp_worker.proxies import ProxyLookup

from tests.support.master import key_header, keyed_master
from wasp.proxies import Credentials
from wasp.slots import Slot
from wasp.webhooks import WebhooksDocument

Client = TestClient[Any, Any]
KEYS = {"configurer": ["read", "config"], "reader": ["read"], "sender": ["send", "session"]}
PASSWORD = "s3cret-Pa55word-never-shown"


key = key_header


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[Client]:
    async with keyed_master(tmp_path, KEYS) as client:
        yield client


async def call(
    client: Client, method: str, path: str, body: Any = None, who: str = "configurer"
) -> tuple[int, dict[str, Any]]:
    async with client.request(
        method, "/api/proxy-credentials" + path, json=body, headers=key(who)
    ) as response:
        return response.status, await response.json()


def proxy_of(config: Path, slot: str) -> str | None:
    """What the worker's own reader makes of the account's proxy: its URL with credentials."""
    (config / "accounts.json").write_text(
        json.dumps([{"slot": slot, "proxy": "socks5://127.0.0.1:1080"}])
    )
    found = ProxyLookup(config, config / "proxy-credentials.json")(Slot.parse(slot))
    return None if found is None else found.address()


async def test_credentials_reach_the_worker_and_never_an_answer_or_a_log(
    master: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = tmp_path / "config"
    status, answer = await call(master, "PUT", "/A1", {"username": "alice", "password": PASSWORD})
    assert (status, answer) == (
        200,
        {"ok": True, "slot": "A1", "username": "alice", "replaced": False},
    )
    status, answer = await call(master, "PUT", "/B7", {"username": "bob", "password": "pw-b"})
    assert status == 200, answer
    stored = config / "proxy-credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert proxy_of(config, "A1") == f"socks5://alice:{PASSWORD}@127.0.0.1:1080"
    status, listed = await call(master, "GET", "")
    assert listed == {
        "ok": True,
        "credentials": [{"slot": "A1", "username": "alice"}, {"slot": "B7", "username": "bob"}],
    }
    # A new password replaces the old one; the other slot's entry stays.
    status, answer = await call(master, "PUT", "/A1", {"username": "alice", "password": "new"})
    assert (status, answer["replaced"]) == (200, True)
    assert proxy_of(config, "A1") == "socks5://alice:new@127.0.0.1:1080"
    assert proxy_of(config, "B7") == "socks5://bob:pw-b@127.0.0.1:1080"
    status, answer = await call(master, "DELETE", "/A1")
    assert (status, answer) == (200, {"ok": True, "slot": "A1", "removed": True})
    assert proxy_of(config, "A1") == "socks5://127.0.0.1:1080"
    status, answer = await call(master, "DELETE", "/A1")
    assert (status, answer["removed"]) == (200, False)
    assert PASSWORD not in caplog.text
    assert "proxy_credentials_written" in caplog.text


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/A1", {"username": "", "password": PASSWORD}, "username"),
        ("/A1", {"username": "alice"}, "password"),
        ("/A1", {"username": "alice", "password": PASSWORD, "url": "x"}, "url"),
        ("/A1", {"username": "alice", "password": 12345}, "password"),
        ("/A1", [PASSWORD], "body"),
        ("/nope", {"username": "alice", "password": PASSWORD}, "slot"),
    ],
)
async def test_bad_input_is_a_400_that_changes_nothing_and_never_repeats_the_password(
    master: Client, tmp_path: Path, path: str, body: Any, reason: str
) -> None:
    status, answer = await call(master, "PUT", "/C3", {"username": "carol", "password": "c"})
    assert status == 200
    stored = tmp_path / "config" / "proxy-credentials.json"
    before = stored.read_bytes()
    status, answer = await call(master, "PUT", path, body)
    assert status == 400, answer
    assert reason in answer["error"]
    assert PASSWORD not in json.dumps(answer)
    assert stored.read_bytes() == before


async def test_only_config_keys_see_or_write_them(master: Client, tmp_path: Path) -> None:
    for who in ("reader", "sender"):
        status, _ = await call(master, "PUT", "/A1", {"username": "x", "password": "y"}, who)
        assert status == 403
        status, _ = await call(master, "GET", "", who=who)
        assert status == 403
        status, _ = await call(master, "DELETE", "/A1", who=who)
        assert status == 403
    assert not (tmp_path / "config" / "proxy-credentials.json").exists()


async def test_in_kubernetes_they_are_a_key_of_the_secret_beside_the_webhook_secrets(
    api_client: kube.ApiClient, namespace: str
) -> None:
    """Against the real API server: the entry lands in the Secret's `proxy-credentials.json`,
    the webhook secrets' key is kept (and keeps it in turn), and a write that raced another
    one is a 409, not a lost entry."""
    core = kube.CoreV1Api(api_client)
    core.create_namespaced_secret(
        namespace,
        kube.V1Secret(
            metadata=kube.V1ObjectMeta(name="rel-webhook-secrets"),
            data={"webhook-secrets.json": base64.b64encode(b'{"crm": "whsec_x"}').decode()},
        ),
    )
    store = SecretCredentialStore(api_client, namespace, "rel-webhook-secrets")
    assert await store.put("A1", Credentials(username="alice", password=PASSWORD)) is False
    data = core.read_namespaced_secret("rel-webhook-secrets", namespace).data
    assert json.loads(base64.b64decode(data["proxy-credentials.json"])) == {
        "A1": {"username": "alice", "password": PASSWORD}
    }
    assert json.loads(base64.b64decode(data["webhook-secrets.json"])) == {"crm": "whsec_x"}
    webhooks = KubeWebhookStore(api_client, namespace, "cfg", "rel-webhook-secrets")
    core.create_namespaced_config_map(
        namespace, kube.V1ConfigMap(metadata=kube.V1ObjectMeta(name="cfg"), data={})
    )
    await webhooks.write(WebhooksDocument(), {})
    assert set(await store.read()) == {"A1"}

    stale = core.read_namespaced_secret("rel-webhook-secrets", namespace)
    assert await store.put("B2", Credentials(username="bob", password="pw")) is False

    class Racing(SecretCredentialStore):
        async def _secret(self) -> Any:  # what it read before the other write landed
            return stale

    with pytest.raises(Conflict):
        await Racing(api_client, namespace, "rel-webhook-secrets").put("A1", None)
    assert set(await store.read()) == {"A1", "B2"}
