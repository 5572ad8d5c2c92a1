"""A 29.97 fps publisher through the whole service: 2 s is not a whole number of its
frames, so each segment is 59 frames (1.969 s), never 60 (2.002 s, longer than the
target duration: GStreamer warns). ffmpeg (strictly) and GStreamer's playbin play the
recording without a warning, at the publisher's rate."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import m3u8
import pytest

from tests.support.media import SMALL_RENDITIONS, SMALL_TEMPLATE, ffmpeg_warnings
from tests.support.players import gst_play
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.service import Live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECONDS = 12


async def test_a_2997_fps_live_has_no_segment_over_its_target_and_plays_clean(
    live: Live, tmp_path: Path
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, "ntsc-" + secrets.token_hex(4), "ntsc")
    command = ffmpeg_publish_cmd(
        live.rtmp_url(job["key"]), size="320x180", rate="30000/1001", seconds=SECONDS, gop_frames=30
    )
    publisher = await asyncio.create_subprocess_exec(*command)
    assert await publisher.wait() == 0
    await live.wait_status(job, 4)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    prefix = f"live/{job['input']['filePath']}"
    for rendition in SMALL_RENDITIONS:
        playlist = m3u8.loads(live.get_text(job["bucket"], f"{prefix}/{rendition}/event.m3u8"))
        durations = [s.duration for s in playlist.segments]
        assert playlist.target_duration == 2, rendition
        assert max(durations) <= playlist.target_duration, (rendition, durations)
        assert sum(durations) == pytest.approx(SECONDS, abs=0.1), (rendition, durations)
        assert durations[:-1] == [1.969] * (len(durations) - 1), (rendition, durations)
    played = job["storageMasterFile"].rsplit("/", 1)[0] + f"/{SMALL_RENDITIONS[0]}/event.m3u8"
    assert ffmpeg_warnings(played, strict=True) == ""
    run = await asyncio.to_thread(gst_play, played, SECONDS, 60)
    report = run.report()
    assert run.played_seconds >= SECONDS - 0.5 and not run.discontinuity_warnings, report
    assert run.frame_rates == {"30000/1001"}, report
    assert not [w for w in run.warnings if "EXTINF" in w or "TARGETDURATION" in w], report
