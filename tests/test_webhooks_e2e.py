"""Webhooks of a real live (ffmpeg publishing over RTMP, HLS into SeaweedFS) to a local
receiver that verifies every request with `standardwebhooks`: the events arrive in
order; with the receiver down for 20 s, and the service restarted meanwhile, every
event still arrives, in order, none lost."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media.outbound import OutboundPolicy
from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_TEMPLATE
from tests.support.publishers import publish
from tests.support.service import Live, make_projects, make_settings, start_api
from tests.support.waiting import async_wait_until
from tests.support.webhooks import Receiver, project_secret

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service

DOWN_SECONDS = 20.0


@pytest.fixture
async def hooked_live(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    """The whole service, webhooks to loopback allowed, retries from 0.2 s."""
    settings = make_settings(
        tmp_path,
        s3_server,
        outbound=OutboundPolicy(allow_private=True),
        webhook_retry_initial_seconds=0.2,
    )
    project = make_projects(settings.db_path, 1)[0]
    server = await start_api(settings)
    async with aiohttp.ClientSession() as session:
        live = Live(settings, server, session, project, s3_client)
        yield live
        await live.server.close()


async def restart(live: Live) -> None:
    """Stop the service (its app's whole cleanup) and start it again on the same store."""
    await live.server.close()
    live.server = await start_api(live.settings)


async def hooked_job(live: Live, url: str, path: str) -> dict[str, Any]:
    body = {
        "jobTemplateId": SMALL_TEMPLATE,
        "destination": "live",
        "bucket": "hooks-" + secrets.token_hex(4),
        "input": {"filePath": path, "serverType": 0, "inputClass": 0, "callbackUrl": url},
    }
    return (await live.call("POST", "/livejobs", json=body))["result"]


async def toggle(live: Live, job: dict[str, Any], online: bool) -> None:
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": online})


async def one_live(live: Live, job: dict[str, Any], seconds: float = 4) -> None:
    """Online, a publisher for `seconds`, its drop (Interrupted)."""
    await toggle(live, job, True)
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), seconds))
    await live.wait_status(job, 3)
    done = await publisher
    assert done.returncode == 0, done.stderr
    await live.wait_status(job, 4)


async def deliveries(live: Live, job: dict[str, Any]) -> list[dict[str, Any]]:
    base = str(live.server.make_url("")).rstrip("/")
    url = f"{base}/api/v1/{live.project.id}/webhooks/deliveries?liveJobId={job['id']}&pageSize=100"
    async with live.session.get(url, headers=live.project.headers) as response:
        body = await response.json()
        assert response.status == 200, body
    return body["result"][::-1]


def statuses(receiver: Receiver) -> list[tuple[str, str, int, int]]:
    """The status changes received (not the input's health: `livejob.health`)."""
    return [
        (r.type, r.payload["data"]["reason"], r.payload["data"]["previousStatus"],
         r.payload["data"]["status"])
        for r in receiver.unique() if r.type != "livejob.health"
    ]  # fmt: skip


async def wait_statuses(receiver: Receiver, count: int, within: float = 30.0) -> None:
    """Until `count` status changes are here (a job's events go in order: every event
    before the last of them, health changes included, is here too)."""
    await async_wait_until(lambda: len(statuses(receiver)) >= count, within, "status events")


async def test_a_lives_events_arrive_in_order_and_verify(hooked_live: Live) -> None:
    live = hooked_live
    receiver = Receiver([project_secret(live.settings.db_path, live.project.id)])
    await receiver.start()
    try:
        job = await hooked_job(live, receiver.url, "in-order")
        await one_live(live, job)
        await toggle(live, job, False)
        await wait_statuses(receiver, 4)
    finally:
        await receiver.stop()
    assert receiver.rejected == []
    assert statuses(receiver) == [
        ("livejob.online", "WentOnline", 1, 2),
        ("livejob.live", "MediaStarted", 2, 3),
        ("livejob.interrupted", "PublisherDisconnected", 3, 4),
        ("livejob.offline", "WentOffline", 4, 1),
    ]
    for got in receiver.unique():
        assert got.payload["data"]["liveJobId"] == job["id"]
        assert got.payload["data"]["name"] == job["name"]
        assert job["key"] not in got.body.decode()
    stamps = [r.payload["timestamp"] for r in receiver.unique()]
    assert stamps == sorted(stamps)
    rows = await deliveries(live, job)
    assert [r["id"] for r in rows] == [r.webhook_id for r in receiver.unique()]
    assert all(r["state"] == "delivered" for r in rows)


async def test_a_receiver_down_for_20_s_gets_every_event_in_order(hooked_live: Live) -> None:
    live = hooked_live
    receiver = Receiver([project_secret(live.settings.db_path, live.project.id)])
    job = await hooked_job(live, receiver.url, "down")  # nothing listens yet
    down_since = time.monotonic()
    for online in (True, False, True, False, True, False):
        await toggle(live, job, online)
    await asyncio.sleep(DOWN_SECONDS - (time.monotonic() - down_since))
    failing = await deliveries(live, job)
    assert [r["state"] for r in failing] == ["pending"] * 6
    assert failing[0]["attempts"] >= 3 and "cannot connect" in failing[0]["lastError"]
    await receiver.start()
    try:
        await receiver.wait_for(6, within=60)
    finally:
        await receiver.stop()
    assert receiver.rejected == []
    assert receiver.types() == ["livejob.online", "livejob.offline"] * 3
    rows = await deliveries(live, job)
    assert [r["id"] for r in rows] == [r.webhook_id for r in receiver.unique()]


async def test_events_queued_across_a_restart_with_the_receiver_down_all_arrive_in_order(
    hooked_live: Live,
) -> None:
    live = hooked_live
    receiver = Receiver([project_secret(live.settings.db_path, live.project.id)])
    job = await hooked_job(live, receiver.url, "restarted")  # nothing listens yet
    down_since = time.monotonic()
    await one_live(live, job)
    await restart(live)  # in the middle of the outage: the queue is in the store
    await live.wait_status(job, 2)  # waiting for the publisher again
    await toggle(live, job, False)
    await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_since)))
    await receiver.start()
    try:
        await wait_statuses(receiver, 5, within=60)
    finally:
        await receiver.stop()
    assert receiver.rejected == []
    assert statuses(receiver) == [
        ("livejob.online", "WentOnline", 1, 2),
        ("livejob.live", "MediaStarted", 2, 3),
        ("livejob.interrupted", "PublisherDisconnected", 3, 4),
        ("livejob.online", "ServiceRestarted", 4, 2),
        ("livejob.offline", "WentOffline", 2, 1),
    ]
    rows = await deliveries(live, job)
    assert [r["id"] for r in rows] == [r.webhook_id for r in receiver.unique()]  # none lost
    assert all(r["state"] == "delivered" for r in rows)
    assert rows[0]["attempts"] > 1  # tried while the receiver was down, before the restart
    assert all(a["error"] for a in rows[0]["attemptLog"][:-1])
