"""The webhook events: their types, the `data` each carries, and the body fixed at enqueue.

A body is the Standard Webhooks shape, `{"type", "timestamp", "data"}`, as JSON text:
it is written once, in the transaction that records what it tells (the status change
and its timing row, or the timing of a failed rendition), and every attempt sends
those same bytes. `data` names the job by its integer id (`liveJobId`) and its public
name (`name`, a UUID), never by its stream key.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from encoder.host import RENDITION_FAILED

from ..status import LiveStatus

# A job's status -> the event its change to it is (`livejob.online`: online and
# waiting for a publisher, whether it just went online or waits again).
STATUS_EVENTS = {
    LiveStatus.PROCESSING: "livejob.online",
    LiveStatus.LIVE: "livejob.live",
    LiveStatus.INTERRUPTED: "livejob.interrupted",
    LiveStatus.OFFLINE: "livejob.offline",
}
# A timing's child status -> the event it is (events that do not change the status).
TIMING_EVENTS = {RENDITION_FAILED: "output.failed"}
EVENT_TYPES = (*STATUS_EVENTS.values(), *TIMING_EVENTS.values())

WEBHOOK_ID_PREFIX = "msg_"


def new_webhook_id() -> str:
    """A delivery's `webhook-id`: `msg_` and 128 bits from the OS CSPRNG (unguessable,
    unique), the same on every attempt, so a receiver dedupes by it."""
    return WEBHOOK_ID_PREFIX + secrets.token_hex(16)


def status_event(
    job: Mapping[str, Any], status: int, child_status: str, message: str
) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a job's change from `job["status"]` to `status`; None when the
    status stays the same (a timing without a change) or the job has no callbackUrl."""
    if not job.get("callback_url") or int(job["status"]) == status:
        return None
    new, previous = LiveStatus(status), LiveStatus(int(job["status"]))
    return STATUS_EVENTS[new], {
        "liveJobId": int(job["id"]),
        "name": job["name"],
        "status": int(new),
        "statusName": new.label,
        "previousStatus": int(previous),
        "previousStatusName": previous.label,
        "reason": child_status,
        "message": message,
    }


def timing_event(
    job: Mapping[str, Any],
    child_status: str,
    message: str,
    output: Mapping[str, Any] | None,
) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a timing that is an event of its own (`output.failed`), else None."""
    kind = TIMING_EVENTS.get(child_status)
    if kind is None or not job.get("callback_url"):
        return None
    status = LiveStatus(int(job["status"]))
    return kind, {
        "liveJobId": int(job["id"]),
        "name": job["name"],
        "status": int(status),
        "statusName": status.label,
        "reason": child_status,
        "message": message,
        "outputId": None if output is None else int(output["output_id"]),
        "rendition": None if output is None else output["rendition"],
    }


def event_body(kind: str, timestamp: str, data: Mapping[str, Any]) -> str:
    """The body every attempt of the event sends: `{"type", "timestamp", "data"}`."""
    return json.dumps(
        {"type": kind, "timestamp": timestamp, "data": dict(data)},
        separators=(",", ":"),
        ensure_ascii=False,
    )
