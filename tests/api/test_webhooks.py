"""Webhooks, the pure parts: the retry schedule, the signatures (checked with the
`standardwebhooks` library, as a receiver would) and the bodies queued for each event."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from api.status import LiveStatus
from api.webhooks import (
    MAX_DELAY_SECONDS,
    event_body,
    new_webhook_id,
    new_webhook_secret,
    next_attempt_unix,
    retry_delay_seconds,
    signed_headers,
)
from api.webhooks.events import status_event, timing_event

DAY = 86400.0


def highest(low: float, high: float) -> float:
    return high


# -- the retry schedule ------------------------------------------------------------------


def test_the_delay_bound_doubles_from_the_initial_delay_up_to_an_hour() -> None:
    bounds = [retry_delay_seconds(n, 5.0, uniform=highest) for n in range(1, 14)]
    assert bounds[:6] == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0]
    assert bounds[-1] == MAX_DELAY_SECONDS == 3600.0
    assert bounds == sorted(bounds)


def test_the_delay_is_drawn_over_the_whole_bound_full_jitter() -> None:
    delays = [retry_delay_seconds(4, 5.0) for _ in range(2000)]
    assert all(0.0 <= d <= 40.0 for d in delays)
    assert min(delays) < 4.0 and max(delays) > 36.0  # the whole range, not a fixed step
    assert len(set(delays)) > 1900  # receivers' retries spread out


def test_an_event_is_retried_for_24_hours_then_given_up() -> None:
    created = 1_000_000.0
    now, attempts = created, 0
    while True:
        attempts += 1
        at = next_attempt_unix(
            attempts, now, created, initial_seconds=5.0, retry_seconds=DAY, uniform=highest
        )
        if at is None:
            break
        assert at > now
        now = at
    assert created + DAY - MAX_DELAY_SECONDS < now <= created + DAY
    assert 30 < attempts < 45  # 5 s doubling to 1 h, then hourly: about a day


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        retry_delay_seconds(0, 5.0)


# -- signing -------------------------------------------------------------------------------


def test_a_secret_is_whsec_and_256_bits_standardwebhooks_reads() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_") and secret != new_webhook_secret()
    Webhook(secret)  # decodes


def test_an_attempt_verifies_with_the_secret_and_not_with_another_or_a_changed_body() -> None:
    secret, other = new_webhook_secret(), new_webhook_secret()
    body = event_body("livejob.live", "2026-12-01T17:00:00.000Z", {"liveJobId": 1})
    headers = signed_headers([secret], "msg_1", int(time.time()), body)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("onair-webhooks/")
    assert (
        headers["webhook-signature"].startswith("v1,") and " " not in headers["webhook-signature"]
    )
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace('"liveJobId":1', '"liveJobId":2'), headers)


def test_during_the_grace_period_both_signatures_are_sent_each_verifying_alone() -> None:
    current, previous, stranger = new_webhook_secret(), new_webhook_secret(), new_webhook_secret()
    body = event_body("livejob.offline", "2026-12-01T17:00:00.000Z", {"liveJobId": 7})
    headers = signed_headers([current, previous], new_webhook_id(), int(time.time()), body)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret, signature in ((current, signatures[0]), (previous, signatures[1])):
        Webhook(secret).verify(body, headers)  # a receiver still on either secret
        Webhook(secret).verify(body, {**headers, "webhook-signature": signature})
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)


def test_a_stale_timestamp_does_not_verify() -> None:
    secret = new_webhook_secret()
    body = event_body("livejob.live", "2026-12-01T17:00:00.000Z", {})
    headers = signed_headers([secret], "msg_2", int(time.time()) - 600, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)  # hence each attempt is signed afresh


def test_webhook_ids_are_msg_and_unguessable() -> None:
    ids = {new_webhook_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("msg_") and len(i) == 36 for i in ids)


# -- the events ------------------------------------------------------------------------------

JOB = {
    "id": 12,
    "project_id": "p",
    "name": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "status": int(LiveStatus.PROCESSING),
    "callback_url": "https://hooks.example.com/onair",
    "stream_key": "never-in-a-body",
}


def test_a_status_change_is_its_event_with_what_changed() -> None:
    found = status_event(JOB, LiveStatus.LIVE, "MediaStarted", "first media")
    assert found is not None
    kind, data = found
    assert kind == "livejob.live"
    assert data == {
        "liveJobId": 12,
        "name": JOB["name"],
        "status": 3,
        "statusName": "Live",
        "previousStatus": 2,
        "previousStatusName": "Processing",
        "reason": "MediaStarted",
        "message": "first media",
    }
    body = json.loads(event_body(kind, "2026-12-01T17:00:00.000Z", data))
    assert body == {"type": "livejob.live", "timestamp": "2026-12-01T17:00:00.000Z", "data": data}
    assert "never-in-a-body" not in event_body(kind, "t", data)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (LiveStatus.OFFLINE, "livejob.offline"),
        (LiveStatus.LIVE, "livejob.live"),
        (LiveStatus.INTERRUPTED, "livejob.interrupted"),
    ],
)
def test_each_status_has_its_event(status: LiveStatus, kind: str) -> None:
    found = status_event(JOB, status, "x", "y")
    assert found is not None and found[0] == kind
    online = status_event({**JOB, "status": 1}, LiveStatus.PROCESSING, "WentOnline", "")
    assert online is not None and online[0] == "livejob.online"


def test_no_event_without_a_change_or_without_a_callback_url() -> None:
    assert status_event(JOB, LiveStatus.PROCESSING, "ServiceRestarted", "") is None
    assert status_event({**JOB, "callback_url": None}, LiveStatus.LIVE, "x", "") is None


def test_a_failed_rendition_is_an_output_event_and_other_timings_are_none() -> None:
    output = {"output_id": 40, "rendition": "720p"}
    found = timing_event(JOB, "RenditionFailed", "ValueError: boom", output)
    assert found is not None
    kind, data = found
    assert kind == "output.failed"
    assert (data["outputId"], data["rendition"], data["statusName"]) == (40, "720p", "Processing")
    assert timing_event(JOB, "FirstSegmentPublished", "", output) is None
