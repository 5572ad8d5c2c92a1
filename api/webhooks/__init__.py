"""Webhooks to a live job's `callbackUrl`: Standard Webhooks bodies, signed per project,
delivered in order per job from a queue in the store.

- `events`: the event types and the `data` each carries; the body is fixed when the
  event is queued, in the transaction of the change it tells (`api.database`);
- `signing`: the project secrets (`whsec_...`) and one attempt's signed headers;
- `schedule`: exponential backoff with full jitter, given up after 24 h;
- `sender` (`WebhookSender`, imported by `api.app`, not here: it uses the store): the
  background task that claims due deliveries and POSTs them through the outbound guard.

Only the pure parts are imported here, so that `api.database` may use them.
"""

from .events import EVENT_TYPES, STATUS_EVENTS, TIMING_EVENTS, event_body, new_webhook_id
from .schedule import MAX_DELAY_SECONDS, next_attempt_unix, retry_delay_seconds
from .signing import USER_AGENT, new_webhook_secret, signed_headers

__all__ = [
    "EVENT_TYPES",
    "MAX_DELAY_SECONDS",
    "STATUS_EVENTS",
    "TIMING_EVENTS",
    "USER_AGENT",
    "event_body",
    "new_webhook_id",
    "new_webhook_secret",
    "next_attempt_unix",
    "retry_delay_seconds",
    "signed_headers",
]
