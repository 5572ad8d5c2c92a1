"""Standard Webhooks signatures: the per-project secret `whsec_...` and the headers of one
attempt, signed with `standardwebhooks` (not a hand-rolled HMAC).

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`; while a
rotated-out secret is still in its grace period the header carries one signature per
secret, space-separated, and a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
USER_AGENT = "onair-webhooks/1"


def new_webhook_secret() -> str:
    """`whsec_` and 256 bits from the OS CSPRNG, base64: what `standardwebhooks` reads."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signed_headers(
    webhook_secrets: Sequence[str], webhook_id: str, unix_seconds: int, body: str
) -> dict[str, str]:
    """The headers of one attempt at `unix_seconds` (its `webhook-timestamp`), signed
    with each secret in `webhook_secrets` (the current one first)."""
    if not webhook_secrets:
        raise ValueError("no secret to sign with")
    at = datetime.fromtimestamp(unix_seconds, UTC)
    signatures = [Webhook(secret).sign(webhook_id, at, body) for secret in webhook_secrets]
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(unix_seconds),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
