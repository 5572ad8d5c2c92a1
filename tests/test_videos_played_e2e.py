"""A video cut from a real live, played as a viewer would: ffmpeg publishes 20 s of
testsrc2 (burnt-in frame counter) in real time into a template-4 job, cut-and-publish
takes 3.5 s -> 9.7 s, and once the video is Ready ffmpeg reads its master strictly,
hls.js in Chromium plays it to its end without a single error, every
rendition lasts 6.2 s and starts on the source's frame at 3.5 s, the segments inside
the range are the live's own bytes, and the MP4 plays."""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import m3u8
import pytest
from playwright.sync_api import sync_playwright

from packager.s3server import EmbeddedS3
from tests.support.live_rig import player_page, serve_page
from tests.support.media import SMALL_RENDITIONS, SMALL_SIZE, SMALL_TEMPLATE, ffmpeg_warnings
from tests.support.players import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    HlsJsPlayer,
    ffmpeg_read_variant,
    ffprobe_duration,
)
from tests.support.publishers import ffmpeg_publish_cmd, run_process
from tests.support.recording import decoded_frames, psnr
from tests.support.service import Live, start_live
from tests.support.videos import request, v2, wait_video

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[1]
HLS_JS = REPO / "node_modules" / "hls.js" / "dist" / "hls.min.js"
PAGE = REPO / "tests" / "players" / "hlsjs_page.html"
FPS = 30
LIVE_SECONDS = 20
FROM_MS, TO_MS = 3500, 9700
SECONDS = (TO_MS - FROM_MS) / 1000
PLAYBACK_RATE = 2


@pytest.fixture
async def live(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    async for running in start_live(tmp_path, s3_server, s3_client):
        yield running


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The hls.js test page, from an origin of its own on this loop."""
    async with serve_page(player_page(PAGE, HLS_JS)) as url:
        yield url


async def cut_when_recorded(live: Live, job: dict[str, Any]) -> dict[str, Any]:
    """cut-and-publish, asked again while its end is not recorded yet."""
    body = {"title": "the goal", "fromMilisecond": FROM_MS, "toMilisecond": TO_MS}
    url = v2(live, f"/live-videos/{job['name']}/cut-and-publish")
    deadline = time.monotonic() + 60
    while True:
        status, answer = await request(live, "POST", url, json=body)
        if status == 200:
            return answer["result"]  # type: ignore[no-any-return]
        assert status == 400 and "recorded" in answer["errors"][0], answer
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.5)


def hlsjs_plays_to_the_end(page_url: str, master: str) -> tuple[dict[str, Any], str]:
    """hls.js playing `master` to its end in Chromium: its state and report."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=60_000
        )
        try:
            player = HlsJsPlayer.open(browser, page_url, master, PLAYBACK_RATE)
            try:
                player.wait("player.levels.length > 0 && video.currentTime > 0", 30, "it starts")
                player.wait(
                    "player.ended || (video.duration > 0"
                    " && video.currentTime >= video.duration - 0.1)",
                    SECONDS / PLAYBACK_RATE + 30,
                    "it plays to the end",
                )
                return player.state(), player.report()
            finally:
                player.close()
        finally:
            browser.close()


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def first_frame(url: str) -> tuple[Any, int, int]:
    """The first decoded video frame of `url` as luma, and its size."""
    with av.open(url) as container:
        frame = next(container.decode(video=0))
        gray = frame.to_ndarray(format="gray").astype("float64")
        return gray, frame.width, frame.height


def segments(s3: Any, bucket: str, playlist_key: str) -> list[tuple[float, float, bytes]]:
    """(start, end, bytes) of every segment `playlist_key` lists, on its own timeline."""
    text = s3.get_object(Bucket=bucket, Key=playlist_key)["Body"].read().decode()
    base = playlist_key.rsplit("/", 1)[0]
    listed, start = [], 0.0
    for segment in m3u8.loads(text).segments:
        data = s3.get_object(Bucket=bucket, Key=f"{base}/{segment.uri}")["Body"].read()
        listed.append((start, start + segment.duration, data))
        start += segment.duration
    return listed


async def test_a_cut_plays_like_the_frames_it_was_cut_from(live: Live, page_url: str) -> None:
    bucket = "videos-" + secrets.token_hex(4)
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "show")
    source = live.settings.db_path.parent / "published.mkv"
    url = live.rtmp_url(job["key"])
    command = ffmpeg_publish_cmd(
        url,
        size=SMALL_SIZE,
        rate=FPS,
        seconds=LIVE_SECONDS,
        realtime=True,
        extra=["-flags", "+global_header", "-map", "0:v", "-map", "1:a"],
        output=["-f", "tee", f"[f=flv]{url}|[f=matroska]{source}"],
    )
    publisher = asyncio.create_task(run_process(command, within=LIVE_SECONDS + 30))
    try:
        await live.wait_status(job, 3)
        published = await cut_when_recorded(live, job)
        video = await wait_video(live, published["videoPublicId"])
        assert video["status"] == "Ready", video
        assert video["visibility"] == "Public", video
        master = video["playbackUrl"]

        # ffmpeg reads every variant of the master strictly; ffprobe: each lasts 6.2 s.
        parsed = m3u8.loads(await asyncio.to_thread(get_text, master))
        variants = [p.uri for p in parsed.playlists]
        assert len(variants) == len(SMALL_RENDITIONS), parsed.dumps()
        for program in range(len(variants)):
            read = await asyncio.to_thread(ffmpeg_read_variant, master, program)
            assert read.returncode == 0 and read.stderr_lines == [], (read.command, read)
            assert read.video_frames == pytest.approx(SECONDS * FPS, abs=1), read
        assert await asyncio.to_thread(strict_warnings, master) == ""
        master_base = master.rsplit("/", 1)[0]
        rendition_urls = [f"{master_base}/{uri}" for uri in variants]
        for rendition_url in rendition_urls:
            duration = await asyncio.to_thread(ffprobe_duration, rendition_url)
            assert duration == pytest.approx(SECONDS, abs=1 / FPS), rendition_url

        # Each rendition's first frame is the source's at 3.5 s (frame 105).
        for rendition_url in rendition_urls:
            frame, width, height = await asyncio.to_thread(first_frame, rendition_url)
            source_frames = await asyncio.to_thread(decoded_frames, source, width, height)
            scores = {i: psnr(frame, source_frames[i]) for i in (104, 105, 106)}
            assert max(scores, key=lambda i: scores[i]) == 105, (rendition_url, scores)
            assert scores[105] > 25, (rendition_url, scores)

        # Segments fully inside the range are the live's own objects (its DVR playlist
        # lists the whole recording), byte for byte.
        base = live.settings.storage_base_url.rstrip("/")
        vod_prefix = urlsplit(master_base).path.split(f"/{bucket}/", 1)[1]
        for uri in variants:
            rendition = uri.split("/", 1)[0]
            live_playlist = f"live/show/{rendition}/dvr.m3u8"
            inside = [
                data
                for start, end, data in segments(live.s3, bucket, live_playlist)
                if FROM_MS / 1000 <= start and end <= TO_MS / 1000
            ]
            cut = [data for *_, data in segments(live.s3, bucket, f"{vod_prefix}/{uri}")]
            assert inside, (rendition, live_playlist)
            assert inside == cut[1 : 1 + len(inside)], (rendition, [len(d) for d in cut])
        assert master.startswith(base), (master, base)

        # The MP4 plays: 6.2 s, decoded without a warning.
        original = video["originalFile"]
        duration = await asyncio.to_thread(ffprobe_duration, original)
        assert duration == pytest.approx(SECONDS, abs=0.1), original
        assert await asyncio.to_thread(strict_warnings, original) == ""

        # hls.js plays it to its end, anonymously, without one error, fatal or not: the
        # re-encoded first segment starts audio and video together (no start gap for it
        # to report as `bufferSeekOverHole` and seek over).
        state, report = await asyncio.to_thread(hlsjs_plays_to_the_end, page_url, master)
        assert state["errors"] == [], report
        assert state["duration"] == pytest.approx(SECONDS, abs=0.2), report
    finally:
        returncode, stderr = await publisher
    assert returncode == 0, stderr


def strict_warnings(url: str) -> str:
    return ffmpeg_warnings(url, strict=True)
