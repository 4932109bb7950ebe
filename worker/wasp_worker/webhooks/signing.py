"""Standard Webhooks signatures, made by the specification's official library, so
receivers verify with theirs: `webhook-id`, `webhook-timestamp` (when this
attempt was signed) and `webhook-signature` (`v1,<base64 HMAC-SHA256>`)."""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def headers(secret: str, event_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The three headers of one attempt; the secret never leaves this call."""
    at = at.astimezone(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, body.decode()),
    }
