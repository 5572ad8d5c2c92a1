"""Videos cut from a real live (ffmpeg publishing over RTMP, HLS into SeaweedFS, the
cut engine `vod`), through the service's API: cut-and-publish while the live goes on,
stop-and-cut ending it, private videos refused to anonymous readers but playing through
presigned URLs and onair's playlist (after the first URLs expired too), the webhooks,
another project's view, and cuts across a restart of the service."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.database import Database
from api.database.schema import videos
from api.videos.cuts import MAX_ATTEMPTS
from media.outbound import OutboundPolicy
from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_TEMPLATE
from tests.support.publishers import publish
from tests.support.service import Live, make_projects, make_settings, start_api
from tests.support.videos import anonymous_get, played_seconds, request, v1, v2, wait_video
from tests.support.webhooks import Receiver, project_secret

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LIVE_SECONDS = 10.0
PRESIGN_SECONDS = 3


@pytest.fixture
async def service(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    """The whole service: webhooks to loopback, presigned URLs that expire in 3 s."""
    settings = make_settings(
        tmp_path,
        s3_server,
        outbound=OutboundPolicy(allow_private=True),
        webhook_retry_initial_seconds=0.2,
        presign_seconds=PRESIGN_SECONDS,
        playback_token_seconds=600,
    )
    projects = make_projects(settings.db_path, 2)
    server = await start_api(settings)
    async with aiohttp.ClientSession() as session:
        live = Live(settings, server, session, projects[0], s3_client)
        live.other = projects[1]  # type: ignore[attr-defined]
        yield live
        await live.server.close()


async def hooked_job(live: Live, url: str | None = None) -> dict[str, Any]:
    body = {
        "jobTemplateId": SMALL_TEMPLATE,
        "destination": "live",
        "bucket": "videos-" + secrets.token_hex(4),
        "input": {"filePath": "show", "serverType": 0, "inputClass": 0, "callbackUrl": url},
    }
    job = (await live.call("POST", "/livejobs", json=body))["result"]
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    return job


async def cut_when_recorded(
    live: Live, job: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    """cut-and-publish, asked again while its end is not recorded yet (a 400 saying the
    recorded range)."""
    deadline = time.monotonic() + 60
    while True:
        status, answer = await request(
            live, "POST", v2(live, f"/live-videos/{job['name']}/cut-and-publish"), json=body
        )
        if status == 200:
            return answer["result"]  # type: ignore[no-any-return]
        assert status == 400, answer
        assert "recorded" in answer["errors"][0], answer
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.5)


async def test_cut_and_publish_then_stop_and_cut_a_private_video(service: Live) -> None:
    live = service
    receiver = Receiver([project_secret(live.settings.db_path, live.project.id)])
    await receiver.start()
    try:
        job = await hooked_job(live, receiver.url)
        publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), LIVE_SECONDS))
        await live.wait_status(job, 3)

        # While live: a public cut of 1..3 s, once 3 s are recorded; the live goes on.
        published = await cut_when_recorded(
            live, job, {"title": "the goal", "fromMilisecond": 1000, "toMilisecond": 3000}
        )
        assert published["name"] == "the goal"
        assert (await live.call("GET", f"/livejobs/{job['id']}"))["result"]["online"] is True
        clip = await wait_video(live, published["videoPublicId"])
        assert clip["status"] == "Ready", clip
        assert clip["liveVideoId"] == job["name"]
        assert (clip["fromMilisecond"], clip["toMilisecond"]) == (1000, 3000)
        assert abs(clip["duration"] - 2000) <= 100, clip
        assert clip["originalFile"] == published["originalFile"]
        assert abs(await played_seconds(clip["playbackUrl"]) - 2.0) <= 0.2
        assert abs(await played_seconds(clip["originalFile"]) - 2.0) <= 0.2
        assert anonymous_get(clip["playbackUrl"]) == 200  # Public: as the live's objects

        done = await publisher
        assert done.returncode == 0, done.stderr
        await live.wait_status(job, 4)  # Interrupted: the publisher left, still online

        # Stop-and-cut, no range, Private: the whole live; the job is offline at once.
        status, answer = await request(
            live,
            "POST",
            v2(live, f"/live-videos/{job['id']}/stop-and-cut"),
            json={"videoVisibilityOptionId": 2},
        )
        assert status == 200, answer
        public_id = answer["result"]["videoPublicId"]
        state = (await live.call("GET", f"/livejobs/{job['id']}"))["result"]
        assert (state["online"], state["status"]) == (False, 1)
        video = await wait_video(live, public_id)
        assert video["status"] == "Ready", video
        assert video["visibility"] == "Private"
        assert abs(video["duration"] - LIVE_SECONDS * 1000) <= 1000, video
        assert video["fromMilisecond"] == 0
        assert video["toMilisecond"] == video["duration"]

        # Its objects: refused anonymously; the presigned URLs play.
        base = live.settings.storage_base_url
        prefix = f"{base}/{job['bucket']}/live/show/videos/private/{public_id}"
        assert anonymous_get(f"{prefix}/master.m3u8") == 403
        assert anonymous_get(f"{prefix}/original.mp4") == 403
        assert anonymous_get(f"{prefix}/180p/index.m3u8") == 403
        assert "X-Amz-Signature" in video["originalFile"]
        seconds = await played_seconds(video["originalFile"])
        assert abs(seconds - video["duration"] / 1000) <= 0.2
        assert "/playlist.m3u8?token=" in video["playbackUrl"]
        assert abs(await played_seconds(video["playbackUrl"]) - seconds) <= 0.2

        # After the first presigned URLs expired, the same playbackUrl plays again.
        async with live.session.get(
            video["playbackUrl"].replace("playlist.m3u8?", "playlist.m3u8?variant=0&")
        ) as response:
            assert response.status == 200
            media = await response.text()
        old_segment = next(line for line in media.splitlines() if line.startswith("http"))
        assert anonymous_get(old_segment) == 200
        await asyncio.sleep(PRESIGN_SECONDS + 1.5)
        assert anonymous_get(old_segment) == 403  # expired
        assert abs(await played_seconds(video["playbackUrl"]) - seconds) <= 0.2

        # A bad token is refused, without an API key needed for a good one.
        bad = video["playbackUrl"].split("token=")[0] + "token=1.forged"
        status, answer = await request(live, "GET", bad, headers={})
        assert status == 403, answer

        # Another project sees neither video, nor can it cut this live.
        other = {"Authorization": f"Bearer {live.other.key}"}  # type: ignore[attr-defined]
        other_base = v1(live, "").replace(live.project.id, live.other.id)  # type: ignore[attr-defined]
        status, _ = await request(live, "GET", f"{other_base}/videos/{public_id}", headers=other)
        assert status == 404
        status, listing = await request(live, "GET", f"{other_base}/videos", headers=other)
        assert (status, listing["result"]) == (200, [])

        # The list, newest first; a video.ready webhook for each cut.
        status, listing = await request(live, "GET", v1(live, "/videos"))
        assert [v["videoPublicId"] for v in listing["result"]] == [
            public_id,
            published["videoPublicId"],
        ]
        await receiver.wait_for(1)

        def ready() -> list[dict[str, Any]]:
            return [r.payload["data"] for r in receiver.unique() if r.type == "video.ready"]

        deadline = time.monotonic() + 30
        while len(ready()) < 2:
            assert time.monotonic() < deadline, receiver.types()
            await asyncio.sleep(0.2)
        assert [d["videoPublicId"] for d in ready()] == [published["videoPublicId"], public_id]
        assert {d["liveVideoId"] for d in ready()} == {job["name"]}
    finally:
        await receiver.stop()


async def test_a_cut_out_of_range_and_cuts_left_by_a_dead_service(service: Live) -> None:
    live = service
    job = await hooked_job(live)
    done = await publish(live.rtmp_url(job["key"]), 5.0)
    assert done.returncode == 0, done.stderr
    await live.wait_status(job, 4)

    # Outside what was recorded: a 400 saying what was; the live goes on.
    status, answer = await request(
        live,
        "POST",
        v2(live, f"/live-videos/{job['name']}/stop-and-cut"),
        json={"fromMilisecond": 1000, "toMilisecond": 60000},
    )
    assert status == 400, answer
    assert answer["errors"][0].startswith("fromMilisecond, toMilisecond: ")
    assert "the recorded range is 0 to " in answer["errors"][0]
    before = {"dateTimeFrom": "2024-11-13T13:05:31.392Z", "dateTimeTo": "2024-11-13T13:06:31Z"}
    status, answer = await request(
        live, "POST", v2(live, f"/live-videos/{job['name']}/stop-and-cut"), json=before
    )
    assert status == 400, answer
    assert answer["errors"][0].startswith("dateTimeFrom, dateTimeTo: 2024-11-13T13:05:31.392")
    assert "is outside the recording: the recorded range is 0 to " in answer["errors"][0]
    assert (await live.call("GET", f"/livejobs/{job['id']}"))["result"]["online"] is True

    # Two cuts of the same live at once, then the service dies with both "running"
    # (their rows as a killed host leaves them: held, attempts counted); a third was
    # interrupted too often already.
    ids = []
    for body in ({"fromMilisecond": 500, "toMilisecond": 2500}, {"toMilisecond": 3000}):
        status, answer = await request(
            live, "POST", v2(live, f"/live-videos/{job['id']}/cut-and-publish"), json=body
        )
        assert status == 200, answer
        ids.append(answer["result"]["videoPublicId"])
    stuck = await request(
        live, "POST", v2(live, f"/live-videos/{job['id']}/cut-and-publish"), json={}
    )
    assert stuck[0] == 200
    await live.server.close()
    database = Database(live.settings.db_path)
    try:
        with database.engine.begin() as connection:
            connection.execute(
                videos.update()
                .where(videos.c.public_id.in_(ids))
                .values(status="Processing", claimed_by="host-1", claimed_until="9999", attempts=1)
            )
            connection.execute(
                videos.update()
                .where(videos.c.public_id == stuck[1]["result"]["videoPublicId"])
                .values(status="Processing", claimed_by="host-1", claimed_until="9999",
                        attempts=MAX_ATTEMPTS)
            )  # fmt: skip
    finally:
        database.close()
    live.server = await start_api(live.settings)

    first, second = [await wait_video(live, public_id) for public_id in ids]
    assert (first["status"], second["status"]) == ("Ready", "Ready"), (first, second)
    assert abs(first["duration"] - 2000) <= 100 and abs(second["duration"] - 3000) <= 100
    assert abs(await played_seconds(first["playbackUrl"]) - 2.0) <= 0.2
    failed = await wait_video(live, stuck[1]["result"]["videoPublicId"])
    assert failed["status"] == "Failed"
    assert "interrupted" in failed["error"]
    assert failed["playbackUrl"] is None and failed["originalFile"] is None


async def test_stop_and_cut_without_a_range_cuts_the_toggles_window(service: Live) -> None:
    live = service
    body = {
        "jobTemplateId": SMALL_TEMPLATE,
        "destination": "live",
        "bucket": "videos-" + secrets.token_hex(4),
        "input": {"filePath": "window", "serverType": 0, "inputClass": 0},
    }
    job = (await live.call("POST", "/livejobs", json=body))["result"]
    now = datetime.now(UTC)
    window = {
        "online": True,
        "startDateTime": (now + timedelta(seconds=3)).isoformat(),
        "finishDateTime": (now + timedelta(seconds=6)).isoformat(),
    }
    await live.call("POST", f"/livejobs/{job['key']}", json=window)
    done = await publish(live.rtmp_url(job["key"]), 9.0)
    assert done.returncode == 0, done.stderr
    status, answer = await request(
        live, "POST", v2(live, f"/live-videos/{job['id']}/stop-and-cut"), json={}
    )
    assert status == 200, answer
    video = await wait_video(live, answer["result"]["videoPublicId"])
    assert video["status"] == "Ready", video
    assert abs(video["duration"] - 3000) <= 150, video
    assert abs(await played_seconds(video["playbackUrl"]) - 3.0) <= 0.2
