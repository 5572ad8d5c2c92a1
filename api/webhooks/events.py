"""The webhook events: their types, the `data` each carries, and the body fixed at enqueue.

A body is the Standard Webhooks shape, `{"type", "timestamp", "data"}`, as JSON text:
it is written once, in the transaction that records what it tells (the status change
and its timing row, or the timing of a failed rendition), and every attempt sends
those same bytes. `data` names the job by its integer id (`liveJobId`) and its public
name (`name`, a UUID), never by its stream key.

`restream.state` (`restream_event`): a restream of a live (`api.restreams`) changed
state, queued with its timing row (`JobRecords.restream_changed`). Its `data`:
`{"liveJobId", "name", "restreamId", "title", "state", "reason", "message"}`, where
`state` is `connecting`, `forwarding`, `reconnecting`, `errored` or `idle` (stopped),
`reason` the timing's child status (`RestreamConnecting`, `RestreamConnected`,
`RestreamReconnecting`, `RestreamErrored`, `RestreamStopped`) and `message` what the
runtime said. Never the restream's stream key or its URL.

`input.failover` (`input_failover_event`): a job of the Standard input class switched
between its primary and its backup input, queued with its timing row
(`JobRecords.input_switched`). Its `data`: `{"liveJobId", "name", "childStatus",
"from", "to", "reason", "message"}`, where `childStatus` is `InputFailover` (the input
in use was lost: onair took the other one) or `InputFailback` (back to the primary,
clean again for failbackAfterSeconds), `from` and `to` are `primary` or `backup`,
`reason` says why in a word and `message` in a sentence. Never a stream key or a
source's URL.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
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
# A change of the input's health (`ingest.health`), with its `HealthChanged` timing.
HEALTH_EVENT = "livejob.health"
# A video cut from a live (`api.videos`) is ready, or failed for good.
VIDEO_READY, VIDEO_FAILED = "video.ready", "video.failed"
VIDEO_EVENTS = (VIDEO_READY, VIDEO_FAILED)
# A restream of a live changed state (`api.restreams`), with its timing: the timing's
# child status -> the restream's state it tells.
RESTREAM_STATE_EVENT = "restream.state"
RESTREAM_CHILD_STATES = {
    "RestreamConnecting": "connecting",
    "RestreamConnected": "forwarding",
    "RestreamReconnecting": "reconnecting",
    "RestreamErrored": "errored",
    "RestreamStopped": "idle",
}
# A Standard job switched inputs, with its timing: the timing's child status -> the
# word its message starts with.
INPUT_FAILOVER_EVENT = "input.failover"
INPUT_FAILOVER, INPUT_FAILBACK = "InputFailover", "InputFailback"
INPUT_SWITCHES = {INPUT_FAILOVER: "failover", INPUT_FAILBACK: "failback"}
PRIMARY_INPUT, BACKUP_INPUT = "primary", "backup"
INPUT_NAMES = (PRIMARY_INPUT, BACKUP_INPUT)
EVENT_TYPES = (
    *STATUS_EVENTS.values(),
    *TIMING_EVENTS.values(),
    HEALTH_EVENT,
    *VIDEO_EVENTS,
    RESTREAM_STATE_EVENT,
    INPUT_FAILOVER_EVENT,
)

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


def health_event(
    job: Mapping[str, Any],
    health_status_name: str,
    previous_health_status_name: str,
    reasons: Sequence[Mapping[str, str]],
) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a change of the job's input health; None without a callbackUrl.
    `reasons`: `{type, description}` each (`healthReasons` of `stats`)."""
    if not job.get("callback_url"):
        return None
    return HEALTH_EVENT, {
        "liveJobId": int(job["id"]),
        "name": job["name"],
        "healthStatusName": health_status_name,
        "previousHealthStatusName": previous_health_status_name,
        "reasons": [dict(reason) for reason in reasons],
    }


def video_event(job: Mapping[str, Any], video: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(type, data) of a video's end: `video.ready`, or `video.failed` with its `error`;
    queued on its live job (in order with the job's other events)."""
    ready = video["status"] == "Ready"
    return VIDEO_READY if ready else VIDEO_FAILED, {
        "videoPublicId": video["public_id"],
        "liveVideoId": job["name"],
        "liveJobId": int(job["id"]),
        "status": video["status"],
        "error": None if ready else video["error"],
    }


def restream_event(
    job: Mapping[str, Any], restream_id: int, title: str, child_status: str, message: str
) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a restream's change of state (`child_status`, one of
    `RESTREAM_CHILD_STATES`); None without a callbackUrl."""
    if not job.get("callback_url"):
        return None
    return RESTREAM_STATE_EVENT, {
        "liveJobId": int(job["id"]),
        "name": job["name"],
        "restreamId": int(restream_id),
        "title": title,
        "state": RESTREAM_CHILD_STATES[child_status],
        "reason": child_status,
        "message": message,
    }


def input_failover_event(
    job: Mapping[str, Any],
    child_status: str,
    from_input: str,
    to_input: str,
    reason: str,
    message: str,
) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a Standard job's switch of input (`child_status`, one of
    `INPUT_SWITCHES`; `from_input`, `to_input` of `INPUT_NAMES`); None without a
    callbackUrl."""
    if not job.get("callback_url"):
        return None
    return INPUT_FAILOVER_EVENT, {
        "liveJobId": int(job["id"]),
        "name": job["name"],
        "childStatus": child_status,
        "from": from_input,
        "to": to_input,
        "reason": reason,
        "message": message,
    }


def event_body(kind: str, timestamp: str, data: Mapping[str, Any]) -> str:
    """The body every attempt of the event sends: `{"type", "timestamp", "data"}`."""
    return json.dumps(
        {"type": kind, "timestamp": timestamp, "data": dict(data)},
        separators=(",", ":"),
        ensure_ascii=False,
    )
