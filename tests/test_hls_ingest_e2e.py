"""HLS ingest through the whole service: ffmpeg pushing (`-f hls -method PUT`) to a
job's ingestUrl, and onair pulling a live source served by a local HTTP server;
statuses, timings and the ladder in the bucket as for RTMP."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media.outbound import OutboundPolicy
from packager.s3server import EmbeddedS3
from tests.support.hls_source import make_segments, serve_source
from tests.support.media import SMALL_RENDITIONS, SMALL_TEMPLATE
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.service import Live, start_live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # real time, the whole service

FPS = 30


@pytest.fixture
async def live(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    """The whole service; outbound connections may reach loopback (the test's source)."""
    policy = OutboundPolicy(allow_private=True)
    async for running in start_live(
        tmp_path, s3_server, s3_client, reconnect_window_seconds=20.0, outbound=policy
    ):
        yield running


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return make_segments(tmp_path_factory.mktemp("hls-source"))


def new_bucket() -> str:
    return "hls-" + secrets.token_hex(4)  # onair creates it (a bucket it owns)


async def create_hls_job(live: Live, bucket: str, path: str, **extra: Any) -> dict[str, Any]:
    job = (
        await live.call(
            "POST",
            "/livejobs",
            json={
                "jobTemplateId": SMALL_TEMPLATE,
                "destination": "live",
                "bucket": bucket,
                "input": {"filePath": path, "serverType": 2, "inputClass": 0, **extra},
            },
        )
    )["result"]
    return job  # type: ignore[no-any-return]


async def go_online(live: Live, job: dict[str, Any]) -> None:
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": True})


async def child_statuses(live: Live, job: dict[str, Any]) -> list[str]:
    return [t["childStatus"] for t in await live.timings(job)]  # oldest first


async def wait_for(live: Live, job: dict[str, Any], child_status: str, within: float) -> None:
    deadline = time.monotonic() + within
    while child_status not in await child_statuses(live, job):
        assert time.monotonic() < deadline, (child_status, await child_statuses(live, job))
        await asyncio.sleep(0.2)


# -- pull ---------------------------------------------------------------------------------


async def test_a_pulled_live_source_is_encoded_whole_and_its_endlist_ends_the_live(
    live: Live, segments: list[bytes], tmp_path: Path
) -> None:
    bucket = new_bucket()
    async with serve_source(segments) as source:
        source.published = 1  # the live has just begun
        job = await create_hls_job(live, bucket, "pulled", sourceUrl=source.url("/live/index.m3u8"))
        assert job["rtmpServer"] is None and job["ingestUrl"] is None
        appending = asyncio.create_task(source.publish_live())
        await go_online(live, job)
        await live.wait_status(job, 3)  # Live: the first segment came
        await appending
        await wait_for(live, job, "SourceEnded", within=30)
        await live.wait_status(job, 4)  # Interrupted: the source ended, as a publisher leaving
        await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    assert source.hits["/live/seg0.ts"] == 1
    assert all(source.hits[f"/live/seg{n}.ts"] == 1 for n in range(len(segments)))
    counts = live.recorded_video_packets(job, SMALL_RENDITIONS, tmp_path)
    await live.assert_recorded_whole(job, counts, len(segments) * FPS)
    statuses = await child_statuses(live, job)
    assert statuses.index("PublisherConnected") < statuses.index("MediaStarted")


async def test_a_source_answering_404_for_5_s_is_reported_and_pulled_again(
    live: Live, segments: list[bytes]
) -> None:
    bucket = new_bucket()
    async with serve_source(segments) as source:
        source.published = 2
        job = await create_hls_job(live, bucket, "flaky", sourceUrl=source.url("/live/index.m3u8"))
        await go_online(live, job)
        await live.wait_status(job, 3)
        source.playlist_down = True
        await wait_for(live, job, "SourceFailing", within=10)
        await asyncio.sleep(5)
        before = await live.encoded_frames(job)
        source.playlist_down = False
        source.published += 2  # the source went on meanwhile
        await wait_for(live, job, "SourceRecovered", within=15)
        deadline = time.monotonic() + 20
        while await live.encoded_frames(job) <= before:
            assert time.monotonic() < deadline, "nothing encoded after the source came back"
            await asyncio.sleep(0.2)
        await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    rows = [t for t in await live.timings(job) if t["childStatus"] == "SourceFailing"]
    assert "404" in rows[0]["messageComment"], rows


# -- push ---------------------------------------------------------------------------------


def push_cmd(url: str, seconds: float) -> list[str]:
    """ffmpeg as an HLS publisher: real time, PUT, one-second segments."""
    return ffmpeg_publish_cmd(
        url,
        size="320x180",
        seconds=seconds,
        realtime=True,
        extra=("-pix_fmt", "yuv420p"),
        output=("-f", "hls", "-method", "PUT", "-hls_time", "1", url),
    )


async def test_an_hls_push_is_encoded_as_an_rtmp_publish_would_be(
    live: Live, tmp_path: Path
) -> None:
    bucket = new_bucket()
    job = await create_hls_job(live, bucket, "pushed")
    assert job["ingestUrl"] == (
        f"http://127.0.0.1:{live.settings.hls_ingest_port}/hls/{job['key']}/index.m3u8"
    )
    await go_online(live, job)
    seconds = 12
    done = await asyncio.to_thread(
        subprocess.run, push_cmd(job["ingestUrl"], seconds), capture_output=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    await live.wait_status(job, 4, within=15)  # the publisher ended it (EXT-X-ENDLIST)
    deadline = time.monotonic() + 30
    while await live.encoded_frames(job) < seconds * FPS:
        assert time.monotonic() < deadline, await live.encoded_frames(job)
        await asyncio.sleep(0.2)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    counts = live.recorded_video_packets(job, SMALL_RENDITIONS, tmp_path)
    await live.assert_recorded_whole(job, counts, seconds * FPS)


async def test_a_wrong_key_is_refused_and_a_publisher_that_stops_is_gone_in_time(
    live: Live,
) -> None:
    bucket = new_bucket()
    job = await create_hls_job(live, bucket, "stops")
    await go_online(live, job)
    wrong = job["ingestUrl"].replace(job["key"], secrets.token_hex(16))
    async with aiohttp.ClientSession() as session:
        async with session.put(wrong, data=b"\x47" * 188) as response:
            assert response.status == 404, response.status  # unknown key, body unread

    process = await asyncio.create_subprocess_exec(
        *push_cmd(job["ingestUrl"], 60),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await live.wait_status(job, 3, within=20)
        await asyncio.sleep(2)
    finally:
        process.kill()  # gone without a word: no ENDLIST
        await process.wait()
    stopped = time.monotonic()
    await live.wait_status(job, 4, within=15)  # Interrupted within about 3 target durations
    assert time.monotonic() - stopped >= 1.5  # not before the publisher had its chance
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    closed = [
        t["messageComment"]
        for t in await live.timings(job)
        if t["childStatus"] == "PublisherDisconnected"
    ]
    assert closed and "gone" in closed[0], closed
