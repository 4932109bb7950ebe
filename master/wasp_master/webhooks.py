"""The webhook subscriptions the master serves and edits (`GET/PUT /api/webhooks`).

Validation happens here (shape, then every target's addresses, then the
secrets); storage is `webhook_store`. Secrets never leave the master in full,
except a generated one, once, in the answer of the PUT that created it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from pydantic import ConfigDict, Field, ValidationError

from wasp.validation import problems
from wasp.webhooks import (
    MASK_PREFIX,
    SECRET_PREFIX,
    Subscription,
    TargetPolicy,
    UnsafeTarget,
    WebhooksDocument,
    check_secret,
    check_target,
    mask,
    new_secret,
)
from wasp_master.errors import BadRequest, Forbidden, MasterError
from wasp_master.shared_config import Conflict
from wasp_master.state import KEY, master_of
from wasp_master.webhook_store import Secrets

log = logging.getLogger("wasp.master")

RESOLVE_TIMEOUT_S = 5.0


class SubscriptionWrite(Subscription):
    """A subscription in `PUT /api/webhooks`: `secret` is a new secret, the masked
    one a GET showed (kept), or absent (kept; generated for a new id)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secret: str | None = Field(
        None,
        repr=False,
        pattern=rf"^{SECRET_PREFIX}(…[!-~]{{4}}|[A-Za-z0-9+/]{{32,88}}={{0,2}})$",
        description="whsec_ and base64 of 24-64 random bytes; omit it to keep the current one.",
    )


class WebhooksWrite(WebhooksDocument):
    """Body of PUT /api/webhooks: every subscription, and the internal targets allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    subscriptions: tuple[SubscriptionWrite, ...] = ()


class TargetRefused(MasterError):
    """A subscription's URL reaches an internal address the allow-list does not name."""

    status = 403


def public(document: WebhooksDocument, secrets: Secrets) -> dict[str, Any]:
    """The document as answers show it: each subscription with its secret masked."""
    shown = document.model_dump(mode="json")
    for subscription in shown["subscriptions"]:
        secret = secrets.get(subscription["id"])
        subscription["secret"] = mask(secret) if secret else None
    return shown


def _parse(data: Any) -> WebhooksWrite:
    try:
        return WebhooksWrite.model_validate(data)
    except ValidationError as error:
        if all(found["type"] == "value_error" for found in error.errors()):
            # What no JSON Schema says (an id twice, a range backwards, a bad CIDR): the
            # document is well-formed and contradicts itself, like a slot listed twice.
            raise Conflict(f"invalid webhooks: {problems(error, limit=10)}") from None
        raise BadRequest(f"invalid webhooks: {problems(error, limit=10)}") from None


def merge_secrets(body: WebhooksWrite, before: Secrets) -> tuple[Secrets, Secrets]:
    """(every subscription's secret, the ones generated now): a given secret replaces the
    old one, a masked or missing one keeps it, a new id without one gets a fresh one."""
    stored: Secrets = {}
    generated: Secrets = {}
    for subscription in body.subscriptions:
        given, old = subscription.secret, before.get(subscription.id)
        if given is not None and not given.startswith(MASK_PREFIX):
            try:
                stored[subscription.id] = check_secret(given)
            except ValueError as error:
                raise Conflict(f"subscription {subscription.id}: {error}") from None
        elif given is not None and (old is None or mask(old) != given):
            raise Conflict(
                f"subscription {subscription.id}: the masked secret is not its current one; "
                "send a new secret or leave `secret` out to keep the current one"
            )
        elif old is not None:
            stored[subscription.id] = old
        else:
            stored[subscription.id] = generated[subscription.id] = new_secret()
    return stored, generated


async def check_targets(body: WebhooksWrite) -> None:
    policy = TargetPolicy.from_allow(body.allow)
    for subscription in body.subscriptions:
        try:
            await asyncio.wait_for(check_target(subscription.url, policy), RESOLVE_TIMEOUT_S)
        except UnsafeTarget as error:
            raise TargetRefused(f"subscription {subscription.id}: {error}") from None
        except TimeoutError:
            raise TargetRefused(
                f"subscription {subscription.id}: its host did not resolve in "
                f"{RESOLVE_TIMEOUT_S:.0f} s"
            ) from None


async def read_webhooks(request: web.Request) -> web.Response:
    document, secrets = await master_of(request).webhooks.read()
    return web.json_response({"ok": True, "webhooks": public(document, secrets)})


async def write_webhooks(request: web.Request) -> web.Response:
    """Replace every subscription, checked first (shape, targets, secrets); nothing
    changes when it is refused."""
    store = master_of(request).webhooks
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("body is not JSON") from None
    body = _parse(data)
    before, old_secrets = await store.read()
    key = request[KEY]
    if body.allow != before.allow and not key.allows("admin"):
        raise Forbidden(f"key {key.id!r} may not change `allow`: that needs admin")
    await check_targets(body)
    secrets, generated = merge_secrets(body, old_secrets)
    document = WebhooksDocument.model_validate(
        body.model_dump(exclude={"subscriptions": {"__all__": {"secret"}}})
    )
    await store.write(document, secrets)
    log.info(
        json.dumps(
            {
                "event": "config_written",
                "kind": "webhooks",
                "items": len(document.subscriptions),
                "secrets_generated": sorted(generated),  # which ids, never the secrets
            }
        )
    )
    return web.json_response(
        {"ok": True, "webhooks": public(document, secrets), "secrets": generated}
    )
