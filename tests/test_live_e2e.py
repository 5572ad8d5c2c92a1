"""The whole service with real peers: ffmpeg publishes over RTMP, HLS lands in SeaweedFS.

These are the tests a broadcaster would run by hand: create a job, put it online,
publish with ffmpeg, and read the bucket back with boto3, the m3u8 parser and ffprobe.
Only the first is about the ladder (720p into template 1); the others publish the small
test source into the small template (two rungs), so that parallel runs have CPU to spare.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import m3u8
import pytest

from api.app import HOSTS_KEY
from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_RENDITIONS, SMALL_TEMPLATE, ffmpeg_warnings, ffprobe
from tests.support.monitoring import RESTREAM_SERIES, queried_metrics, scrape
from tests.support.publishers import publish
from tests.support.service import Live, start_live, stored_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service


@pytest.fixture
def bucket() -> str:
    """A bucket onair has never seen: it creates it itself (it writes no bucket it did
    not create, unless ONAIR_S3_BUCKETS lists it)."""
    return "e2e-" + secrets.token_hex(6)


async def test_publish_720p_to_template_1_lands_a_ladder_in_the_bucket(
    live: Live, bucket: str, tmp_path: Path
) -> None:
    # The 1080p ladder fed 720p: 1080p is skipped, the rest encoded.
    job = await live.create_online_job(1, bucket, "e2e")
    assert set(job["outputManifests"]) == {"1080p", "720p", "480p", "360p"}  # not known yet
    assert await live.status(job) == 2  # Processing: waiting for the publisher
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 8, size="1280x720"))
    await live.wait_status(job, 3)  # Live once media arrives
    done = await publisher
    assert done.returncode == 0, done.stderr
    await live.wait_status(job, 4)  # Interrupted: the publisher left
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    assert await live.status(job) == 1

    prefix = "live/e2e"
    filled = await live.fill_frames(job) / 30  # seconds of fill (30 fps)
    # The live ended: the master leads to the whole recording.
    master = m3u8.loads(live.get_text(bucket, f"{prefix}/master.m3u8"))
    assert master.is_variant
    variants = {p.uri.replace("event.m3u8", "index.m3u8"): p.stream_info for p in master.playlists}
    assert [p.uri for p in master.playlists] == [
        "720p/event.m3u8",
        "480p/event.m3u8",
        "360p/event.m3u8",
    ]
    dvr = m3u8.loads(live.get_text(bucket, f"{prefix}/dvr.m3u8"))
    assert [p.uri for p in dvr.playlists] == ["720p/dvr.m3u8", "480p/dvr.m3u8", "360p/dvr.m3u8"]
    sizes = {"720p": (1280, 720), "480p": (854, 480), "360p": (640, 360)}
    first_pts: dict[str, list[float]] = {}
    for name, (width, height) in sizes.items():
        info = variants[f"{name}/index.m3u8"]
        assert info.resolution == (width, height)
        assert info.bandwidth > 0 and info.average_bandwidth > 0
        assert info.codecs.startswith("avc1.") and "mp4a.40.2" in info.codecs
        event = m3u8.loads(live.get_text(bucket, f"{prefix}/{name}/event.m3u8"))
        assert event.is_endlist
        total = sum(s.duration for s in event.segments)
        # Within one segment of what was published, and of the input-loss fill after the
        # publisher left (in real time: longer when the ladder ran behind real time).
        assert abs(total - 8.0 - filled) <= 2.0, (total, filled)
        first_pts[name] = []
        for segment in event.segments:
            assert round(segment.duration) <= event.target_duration
            body = live.s3.get_object(Bucket=bucket, Key=f"{prefix}/{name}/{segment.uri}")
            assert body["ContentType"] == "video/mp2t"
            path = tmp_path / f"{name}-{segment.uri}"
            path.write_bytes(body["Body"].read())
            probe, _ = ffprobe(path, "-show_packets")
            video = next(s for s in probe["streams"] if s["codec_type"] == "video")
            assert (video["width"], video["height"]) == (width, height)
            assert any(s["codec_type"] == "audio" for s in probe["streams"])
            packets = [p for p in probe["packets"] if p["codec_type"] == "video"]
            assert packets[0]["flags"].startswith("K"), (name, segment.uri)
            first_pts[name].append(round(float(packets[0]["pts_time"]), 3))
        live_playlist = m3u8.loads(live.get_text(bucket, f"{prefix}/{name}/index.m3u8"))
        assert live_playlist.is_endlist
    # Keyframes at the same instants in every rendition: players switch cleanly.
    assert first_pts["720p"] == first_pts["480p"] == first_pts["360p"]

    statuses = [(t["status"], t["childStatus"]) for t in await live.timings(job)]
    assert ("Live", "MediaStarted") in statuses
    assert ("Interrupted", "PublisherDisconnected") in statuses
    outputs = (await live.call("GET", f"/livejobs/outputs?liveJobId={job['id']}"))["result"]
    assert {o["name"] for o in outputs} == {*sizes, "1080p"}
    skipped = next(o for o in outputs if o["name"] == "1080p")
    assert (skipped["skipped"], skipped["skipReason"]) == (True, "source is 1280x720")
    detail = (await live.call("GET", f"/livejobs/{job['id']}"))["result"]
    assert set(detail["outputManifests"]) == set(sizes)
    # Rows about one output carry its outputId, and the filter finds them.
    for output in outputs:
        rows = (
            await live.call(
                "GET", f"/livejobs/{job['id']}/timings?outputId={output['outputId']}&pageSize=50"
            )
        )["result"]
        expected = "RenditionSkipped" if output["skipped"] else "FirstSegmentPublished"
        assert [r["childStatus"] for r in rows] == [expected], output["name"]
        assert all(r["outputId"] == output["outputId"] for r in rows)
    for output in (o for o in outputs if not o["skipped"]):
        assert output["counter"] == len(
            m3u8.loads(live.get_text(bucket, f"{prefix}/{output['name']}/event.m3u8")).segments
        )
        assert output["progress"] >= 6
        # the lease this host took, under the encoder id the store gave it (the first: 1)
        assert (
            output["lockKey"] and output["encoderId"] == live.server.app[HOSTS_KEY].encoder_id == 1
        )
    stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
    assert (stats["width"], stats["height"], stats["framerate"]) == (1280, 720, 30)
    assert (stats["videoCodecId"], stats["audioCodecId"], stats["audioSampleRate"]) == (
        7,
        10,
        48000,
    )


async def test_wrong_key_and_offline_job_are_refused_before_decoding(
    live: Live, bucket: str
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "refused")
    wrong = await publish(live.rtmp_url("00000000-0000-4000-8000-000000000000"), 2, realtime=False)
    assert wrong.returncode != 0
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    offline = await publish(live.rtmp_url(job["key"]), 2, realtime=False)
    assert offline.returncode != 0
    stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
    assert stats["width"] == 0  # nothing was decoded
    assert not any(key.endswith("master.m3u8") for key in stored_keys(live.s3, bucket))
    child = [t["childStatus"] for t in await live.timings(job)]
    assert "PublisherRefused" in child and "MediaStarted" not in child


async def test_second_publisher_on_a_live_key_is_refused(live: Live, bucket: str) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "twice")
    first = asyncio.create_task(publish(live.rtmp_url(job["key"]), 6))
    await live.wait_status(job, 3)
    second = await publish(live.rtmp_url(job["key"]), 2, realtime=False)
    assert second.returncode != 0
    assert (await first).returncode == 0
    timings = await live.timings(job)
    assert any("already publishing" in t["messageComment"] for t in timings)


async def test_reconnect_within_the_window_resumes_the_same_output(live: Live, bucket: str) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "again")
    assert (await publish(live.rtmp_url(job["key"]), 5)).returncode == 0
    await live.wait_status(job, 4)
    assert (await publish(live.rtmp_url(job["key"]), 5)).returncode == 0
    await live.wait_status(job, 4)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    for rendition in SMALL_RENDITIONS:
        event = m3u8.loads(live.get_text(bucket, f"live/again/{rendition}/event.m3u8"))
        assert event.is_endlist
        # The gap between the two publishers is filled (the last picture, then the
        # slate): one timeline, no discontinuity (the codec parameters are the ladder's).
        assert not any(s.discontinuity for s in event.segments), rendition
        total = sum(s.duration for s in event.segments)
        assert 9.0 <= total <= 10.0 + 4.0, (rendition, total)
    child = [t["childStatus"] for t in await live.timings(job)]
    assert child.count("MediaStarted") == 2 and "PublisherReconnected" in child


async def test_a_second_live_continues_the_recording_and_keeps_the_first(
    live: Live, bucket: str
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "twice")
    assert (await publish(live.rtmp_url(job["key"]), 4)).returncode == 0
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    key = "live/twice/180p/event.m3u8"
    first = m3u8.loads(live.get_text(bucket, key))
    first_etags = {
        uri: live.s3.head_object(Bucket=bucket, Key=f"live/twice/180p/{uri}")["ETag"]
        for uri in first.segments.uri
    }
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    assert (await publish(live.rtmp_url(job["key"]), 4)).returncode == 0
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    both = m3u8.loads(live.get_text(bucket, key))
    count = len(first.segments)
    # The recording holds both lives, the second after a discontinuity, numbered on.
    assert both.segments.uri[:count] == first.segments.uri
    assert len(both.segments) > count and both.segments[count].discontinuity
    assert both.segments.uri == [f"seg_{i:06d}.ts" for i in range(len(both.segments))]
    assert abs(sum(s.duration for s in both.segments) - 8.0) <= 2.5
    assert both.is_endlist
    # The first live's segments are the same objects as before.
    for uri, etag in first_etags.items():
        assert live.s3.head_object(Bucket=bucket, Key=f"live/twice/180p/{uri}")["ETag"] == etag
    # The second live's timestamps go on past the first's: ffmpeg, whose HLS reader
    # ignores EXT-X-DISCONTINUITY, reads the whole recording clean.
    played = job["storageMasterFile"].rsplit("/", 1)[0] + "/180p/event.m3u8"
    assert ffmpeg_warnings(played, strict=True) == ""


@pytest.fixture
async def short_window_live(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any
) -> AsyncIterator[Live]:
    async for running in start_live(tmp_path, s3_server, s3_client, reconnect_window_seconds=1.5):
        yield running


async def test_past_the_reconnect_window_the_job_waits_for_input_again(
    short_window_live: Live, bucket: str
) -> None:
    live = short_window_live
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "window")
    assert (await publish(live.rtmp_url(job["key"]), 3)).returncode == 0
    await live.wait_status(job, 4)
    await live.wait_status(job, 2, within=15)  # Processing: waiting for input
    timings = await live.timings(job)
    expired = [t for t in timings if t["childStatus"] == "ReconnectWindowExpired"]
    assert len(expired) == 1 and expired[0]["status"] == "Processing"
    disconnected = next(t for t in timings if t["childStatus"] == "PublisherDisconnected")
    assert "127.0.0.1:" in disconnected["messageComment"]  # the remote address
    # A later publisher still continues the same job.
    assert (await publish(live.rtmp_url(job["key"]), 3)).returncode == 0
    await live.wait_status(job, 4)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    event = m3u8.loads(live.get_text(bucket, "live/window/180p/event.m3u8"))
    assert event.is_endlist and sum(1 for s in event.segments if s.discontinuity) == 1


async def test_a_failing_pipeline_interrupts_only_its_own_job(
    live: Live, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import pipeline as pipeline_module

    class FailingWriter(pipeline_module.HlsWriter):  # type: ignore[misc]
        def add_segment(self, segment: Any) -> None:
            raise RuntimeError("injected packager failure")

    original = pipeline_module.HlsWriter

    def writer_for(storage: Any, bucket_name: str, prefix: str, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        cls = FailingWriter if prefix.endswith("doomed") else original
        return cls(storage, bucket_name, prefix, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "HlsWriter", writer_for)
    doomed = await live.create_online_job(SMALL_TEMPLATE, bucket, "doomed")
    healthy = await live.create_online_job(SMALL_TEMPLATE, bucket, "healthy")
    results = await asyncio.gather(
        publish(live.rtmp_url(doomed["key"]), 6),
        publish(live.rtmp_url(healthy["key"]), 6),
    )
    assert results[1].returncode == 0, results[1].stderr
    failed = [t for t in await live.timings(doomed) if t["childStatus"] == "PipelineFailed"]
    assert failed and failed[0]["status"] == "Interrupted"
    assert "injected packager failure" in failed[0]["messageComment"]
    assert await live.status(doomed) == 4
    # The other job went on: its whole live is in the bucket.
    await live.call("POST", f"/livejobs/{healthy['key']}", json={"online": False})
    event = m3u8.loads(live.get_text(bucket, "live/healthy/180p/event.m3u8"))
    assert event.is_endlist and abs(sum(s.duration for s in event.segments) - 6.0) <= 2.0
    assert "PipelineFailed" not in [t["childStatus"] for t in await live.timings(healthy)]
    # The API still answers, and the failed job can be taken offline cleanly.
    await live.call("POST", f"/livejobs/{doomed['key']}", json={"online": False})
    assert await live.status(doomed) == 1


async def test_passthrough_keeps_the_source_codec(live: Live, bucket: str, tmp_path: Path) -> None:
    job = await live.create_online_job(3, bucket, "copy")
    done = await publish(live.rtmp_url(job["key"]), 6, extra=("-profile:v", "main"))
    assert done.returncode == 0, done.stderr
    await live.wait_status(job, 4)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    master = m3u8.loads(live.get_text(bucket, "live/copy/master.m3u8"))
    assert [p.uri for p in master.playlists] == ["source/event.m3u8"]  # the live ended
    assert master.playlists[0].stream_info.codecs.startswith("avc1.4d")  # Main profile
    event = m3u8.loads(live.get_text(bucket, "live/copy/source/event.m3u8"))
    assert abs(sum(s.duration for s in event.segments) - 6.0) <= 2.0
    first = event.segments[0].uri
    path = tmp_path / "first.ts"
    path.write_bytes(
        live.s3.get_object(Bucket=bucket, Key=f"live/copy/source/{first}")["Body"].read()
    )
    video = next(s for s in ffprobe(path)[0]["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["profile"], video["width"]) == ("h264", "Main", 320)


async def test_a_publisher_faster_than_real_time_is_encoded_whole(
    live: Live, bucket: str, tmp_path: Path
) -> None:
    """ffmpeg pushing as fast as it encodes (no `-re`, several times real time): the
    service slows it down (TCP flow control) instead of dropping; every frame is in
    the bucket and the publisher's session ends as it ended it."""
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "fast")
    done = await publish(live.rtmp_url(job["key"]), 8, realtime=False)
    assert done.returncode == 0, done.stderr

    async def encoded() -> int:
        stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        return min((o.get("framesEncoded", 0) for o in stats["outputs"]), default=0)

    deadline = time.monotonic() + 60
    while await encoded() < 240:
        assert time.monotonic() < deadline, f"{await encoded()} of 240 frames encoded"
        await asyncio.sleep(0.2)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    filled = await live.fill_frames(job)
    disconnects = [
        t["messageComment"]
        for t in await live.timings(job)
        if t["childStatus"] == "PublisherDisconnected"
    ]
    assert len(disconnects) == 1 and disconnects[0].endswith("unpublished"), disconnects
    master = m3u8.loads(live.get_text(bucket, "live/fast/master.m3u8"))
    assert [p.uri for p in master.playlists] == [f"{r}/event.m3u8" for r in SMALL_RENDITIONS]
    for rendition in SMALL_RENDITIONS:
        event = m3u8.loads(live.get_text(bucket, f"live/fast/{rendition}/event.m3u8"))
        whole = b"".join(
            live.s3.get_object(Bucket=bucket, Key=f"live/fast/{rendition}/{s.uri}")["Body"].read()
            for s in event.segments
        )
        probe, _ = ffprobe(tmp_path / f"{rendition}.ts", "-show_packets", data=whole)
        video = sum(1 for p in probe["packets"] if p["codec_type"] == "video")
        # Every source frame, and the input-loss fill if going offline came a second
        # after the publisher's media ended.
        assert video == 240 + filled, (rendition, video, filled)
    stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
    assert stats["droppedFrames"] == 0


async def test_metrics_show_a_live_while_it_runs_and_forget_it_after(
    live: Live, bucket: str
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "metrics")
    publishing = asyncio.create_task(publish(live.rtmp_url(job["key"]), 8))
    await live.wait_status(job, 3)  # Live
    ours = ("live_job", str(job["id"]))
    deadline = time.monotonic() + 20
    while True:
        metrics = await scrape(live)
        segments = [
            value
            for (name, labels), value in metrics.items()
            if name == "onair_job_segments_published_total" and ours in labels
        ]
        if segments and min(segments) >= 1:
            break
        assert time.monotonic() < deadline, "no segment in the metrics"
        await asyncio.sleep(0.3)
    assert metrics[("onair_job_frames_decoded_total", (ours,))] > 0
    assert metrics[("onair_job_pipeline_state", (ours, ("state", "publishing")))] == 1
    assert metrics[("onair_job_input_bitrate_bits_per_second", (("kind", "video"), ours))] > 0
    assert metrics[("onair_active_lives", ())] == 1
    assert metrics[("onair_job_upload_seconds_count", (ours,))] >= 1
    assert metrics[("onair_job_upload_seconds_bucket", (("le", "+Inf"), ours))] >= 1
    assert metrics[("onair_rtmp_connections", (("state", "publishing"),))] == 1
    readers = {
        dict(labels)["reader"]
        for (name, labels), _ in metrics.items()
        if name == "onair_job_reader_dropped_total" and ours in labels
    }
    assert readers == {"ladder", "hls"}
    assert not any(job["key"] in str(labels) for _, labels in metrics)  # no stream key
    # Every series the dashboard and the alert rules (deploy/monitoring) query is here
    # (a restream's: in the restreams' scenario, this live has none).
    assert queried_metrics() - RESTREAM_SERIES - {name for name, _ in metrics} == set()

    refused = await publish(live.rtmp_url("00000000-0000-4000-8000-000000000000"), 1)
    assert refused.returncode != 0
    metrics = await scrape(live)
    assert metrics[("onair_admissions_refused_total", (("reason", "unknown_key"),))] == 1

    assert (await publishing).returncode == 0
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    metrics = await scrape(live)
    assert not [key for key in metrics if ours in key[1]]  # the job's series are gone
    assert metrics[("onair_active_lives", ())] == 0
