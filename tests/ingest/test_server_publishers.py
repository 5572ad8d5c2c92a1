"""Real publishers (ffmpeg CLI, PyAV, GStreamer) over real TCP into the server and decoder."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import av
import pytest

from ingest.rtmp.server import RtmpServer
from tests.support.fakes import Harness
from tests.support.media import decode_file_pts
from tests.support.publishers import (
    ffmpeg_publish_cmd,
    gstreamer_publish_cmd,
    pyav_publish_cmd,
    run_process,
)
from tests.support.rtmp_client import StartServer
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.slow  # real publishers (ffmpeg, GStreamer, PyAV) in real time

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI missing")


def url(server: RtmpServer, key: str) -> str:
    return f"rtmp://127.0.0.1:{server.port}/live/{key}"


@needs_ffmpeg
async def test_ffmpeg_720p30_every_frame_decoded_and_stats(
    start_server: StartServer, harness: Harness
) -> None:
    server = await start_server()
    cmd = ffmpeg_publish_cmd(url(server, "cam1"), size="1280x720", rate=30, seconds=5)
    rc, stderr = await run_process(cmd)
    assert rc == 0, stderr
    job = harness.jobs["cam1"]
    await job.collector.async_wait_ends(1)
    assert len(job.collector.kinds("video")) == 150
    assert all(e[2:] == (1280, 720) for e in job.collector.kinds("video"))
    assert len(job.collector.kinds("audio")) >= 5 * 48000 // 1024
    assert job.closes == ["unpublished"]
    assert harness.requests[0].app == "live"
    assert harness.requests[0].url == f"rtmp://127.0.0.1:{server.port}/live"
    stats = job.decoder.stats()
    assert (stats.width, stats.height, stats.framerate) == (1280, 720, 30)
    assert (stats.video_codec_id, stats.audio_codec_id) == (7, 10)
    assert (stats.audio_sample_rate, stats.audio_channels, stats.stereo) == (48000, 1, False)
    assert stats.audio_sample_size == 16
    assert stats.encoder.startswith("Lavf")
    assert stats.video_data_rate > 0 and stats.audio_data_rate > 0


async def test_pyav_publisher_h264(start_server: StartServer, harness: Harness) -> None:
    server = await start_server()
    rc, stderr = await run_process(
        pyav_publish_cmd(url(server, "pyav"), "libx264", 1280, 720, 30, 5)
    )
    assert rc == 0, stderr
    job = harness.jobs["pyav"]
    await job.collector.async_wait_ends(1)
    assert len(job.collector.kinds("video")) == 150
    stats = job.decoder.stats()
    assert (stats.width, stats.height, stats.framerate) == (1280, 720, 30)
    assert (stats.video_codec_id, stats.audio_codec_id) == (7, 10)
    assert (stats.audio_sample_rate, stats.audio_channels, stats.stereo) == (48000, 2, True)
    assert not job.video_ex_header


@pytest.mark.skipif("libx265" not in av.codecs_available, reason="PyAV wheel without libx265")
async def test_pyav_publisher_enhanced_rtmp_hevc(
    start_server: StartServer, harness: Harness
) -> None:
    server = await start_server()
    rc, stderr = await run_process(
        pyav_publish_cmd(url(server, "hevc"), "libx265", 320, 240, 30, 2)
    )
    assert rc == 0, stderr
    job = harness.jobs["hevc"]
    await job.collector.async_wait_ends(1)
    assert job.video_ex_header  # the payloads really were enhanced FLV (FourCC hvc1)
    assert job.collector.starts[0].video is not None
    assert job.collector.starts[0].video.codec_name == "hevc"
    assert len(job.collector.kinds("video")) == 60
    stats = job.decoder.stats()
    assert stats.video_codec_id == 12
    assert (stats.width, stats.height, stats.framerate) == (320, 240, 30)


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer missing")
@pytest.mark.parametrize("sink", ["rtmp2sink", "rtmpsink"])
async def test_gstreamer_publisher(start_server: StartServer, harness: Harness, sink: str) -> None:
    server = await start_server()
    rc, stderr = await run_process(gstreamer_publish_cmd(url(server, sink), sink, frames=90))
    assert rc == 0, stderr
    job = harness.jobs[sink]
    await job.collector.async_wait_ends(1)
    assert len(job.collector.kinds("video")) == 90
    assert len(job.collector.kinds("audio")) > 100
    stats = job.decoder.stats()
    assert (stats.width, stats.height, stats.framerate) == (320, 240, 30)
    assert (stats.audio_sample_rate, stats.audio_channels) == (44100, 2)
    assert stats.encoder.startswith("GStreamer")


@needs_ffmpeg
async def test_extended_timestamps_arrive_exactly(
    start_server: StartServer, harness: Harness, tmp_path: Path
) -> None:
    server = await start_server()
    sent = tmp_path / "sent.flv"
    tee = f"[f=flv]{url(server, 'late')}|[f=flv]{sent}"
    cmd = ffmpeg_publish_cmd(
        "",
        extra=["-output_ts_offset", "17000", "-map", "0:v", "-map", "1:a"],
        output=["-f", "tee", tee],
    )
    rc, stderr = await run_process(cmd)
    assert rc == 0, stderr
    job = harness.jobs["late"]
    await job.collector.async_wait_ends(1)
    video_sent, audio_sent = decode_file_pts(sent)
    assert len(video_sent) == 90
    assert video_sent[0] >= 17_000_000 - 100  # really past the 24-bit timestamp field
    assert job.collector.pts("video") == video_sent
    assert job.collector.pts("audio") == audio_sent


@needs_ffmpeg
async def test_refused_key(start_server: StartServer, harness: Harness) -> None:
    server = await start_server()
    job = harness.job("forbidden")  # exists, so a wrongly admitted stream would show up here
    rc, stderr = await run_process(ffmpeg_publish_cmd(url(server, "forbidden?token=x")))
    assert rc != 0
    assert "unknown stream key" in stderr  # ffmpeg printed our onStatus description
    assert harness.refusals == ["forbidden"]
    assert job.media_calls == 0
    assert job.collector.events == []
    assert job.decoder.stats().width == 0


@needs_ffmpeg
async def test_second_publisher_on_a_busy_key_is_refused(
    start_server: StartServer, harness: Harness
) -> None:
    server = await start_server()
    first = asyncio.create_task(
        run_process(ffmpeg_publish_cmd(url(server, "busy"), seconds=3, realtime=True))
    )
    await async_wait_until(lambda: "busy" in harness.publishing, 20, "the first publisher")
    rc, stderr = await run_process(ffmpeg_publish_cmd(url(server, "busy"), seconds=1))
    assert rc != 0
    assert "already publishing" in stderr
    rc, stderr = await first
    assert rc == 0, stderr
    job = harness.jobs["busy"]
    await job.collector.async_wait_ends(1)
    assert len(job.collector.kinds("video")) == 90
    assert [s.session for s in job.collector.starts] == [0]


@needs_ffmpeg
async def test_reconnect_gives_two_sessions_on_one_decoder(
    start_server: StartServer, harness: Harness
) -> None:
    server = await start_server()
    for _ in range(2):
        rc, stderr = await run_process(ffmpeg_publish_cmd(url(server, "again"), seconds=2))
        assert rc == 0, stderr
    job = harness.jobs["again"]
    await job.collector.async_wait_ends(2)
    events = job.collector.events
    boundaries = [e[:2] for e in events if e[0] in ("start", "end")]
    assert boundaries == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
    middle = events.index(("start", 1))
    assert len([e for e in events[:middle] if e[0] == "video"]) == 60
    assert len([e for e in events[middle:] if e[0] == "video"]) == 60


@needs_ffmpeg
async def test_twenty_publishers_at_once(start_server: StartServer, harness: Harness) -> None:
    server = await start_server()
    keys = [f"multi{i}" for i in range(20)]
    results = await asyncio.gather(
        *(run_process(ffmpeg_publish_cmd(url(server, k), seconds=3), within=110) for k in keys)
    )
    assert [rc for rc, _ in results] == [0] * 20, [err for _, err in results if err]
    for key in keys:
        job = harness.jobs[key]
        await job.collector.async_wait_ends(1)
        assert len(job.collector.kinds("video")) == 90, key
        assert job.decoder.stats().framerate == 30
    assert server.connection_count == 0
