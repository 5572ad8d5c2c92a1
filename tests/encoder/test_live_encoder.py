"""LiveEncoder end to end: real sources in, segments checked with ffprobe and PyAV."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest

from encoder.host import EncoderTuning
from encoder.live_encoder import LiveEncoder
from encoder.segmenter import TS_PTS_OFFSET
from encoder.templates import get_template
from encoder.video import RenditionWorker
from ingest.media import MediaQueue
from media.segments import Segment
from tests.support.fakes import CollectingSink
from tests.support.media import feed, ffprobe
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # encodes seconds of 720p through the ladder

PROFILE_IDC = {"Constrained Baseline": 0x42, "Baseline": 0x42, "Main": 0x4D, "High": 0x64}


@dataclass
class Run:
    encoder: LiveEncoder
    sink: CollectingSink
    queue: MediaQueue
    events: list[tuple[str, str]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)


def joined_packets(segments: list[Segment], path: Path) -> list[dict[str, Any]]:
    """The segments joined, as ffprobe reads them: no error, and each kind's dts
    strictly increasing across the joins. Returns the packets (type, pts, dts, flags)."""
    info, errors = ffprobe(
        path,
        "-show_entries",
        "packet=codec_type,pts,dts,flags",
        data=b"".join(s.data for s in segments),
    )
    assert errors == ""
    packets: list[dict[str, Any]] = info["packets"]
    for kind in ("video", "audio"):
        dts = [p["dts"] for p in packets if p["codec_type"] == kind]
        assert dts == sorted(dts) and len(set(dts)) == len(dts)
    return packets


def make_encoder(
    template_id: int,
    label: str,
    *,
    tuning: EncoderTuning | None = None,
    sink: CollectingSink | None = None,
    queue_items: int = 120,
) -> Run:
    sink = sink or CollectingSink()
    queue = MediaQueue(queue_items)
    run = Run(encoder=None, sink=sink, queue=queue)  # type: ignore[arg-type]
    run.encoder = LiveEncoder(
        get_template(template_id),
        queue,
        sink,
        tuning=tuning,
        label=label,
        on_event=lambda status, message, _: run.events.append((status, message)),
        on_failure=run.failures.append,
    )
    run.encoder.start()
    return run


def encode(template_id: int, sources: list[Path], label: str) -> Run:
    run = make_encoder(template_id, label)
    for session, source in enumerate(sources):
        feed(source, run.queue, session)
    run.queue.close()
    run.encoder.stop(timeout_seconds=60)
    assert run.encoder.failed is None
    assert run.failures == []
    return run


def probe_segment(segment: Segment, tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(streams by type, video frames) of one segment, decoded by the ffprobe CLI."""
    info, errors = ffprobe(
        tmp_path / f"{segment.rendition}-{segment.sequence}.ts",
        "-show_entries",
        "frame=media_type,pts_time,key_frame,pict_type,width,height",
        data=segment.data,
    )
    assert errors == "", f"{segment.rendition} #{segment.sequence}: {errors}"
    streams = {s["codec_type"]: s for s in info["streams"]}
    video = [f for f in info["frames"] if f["media_type"] == "video"]
    return streams, video


def audio_packets(data: bytes) -> list[tuple[int, bytes]]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return [(p.pts or 0, bytes(p)) for p in container.demux(audio=0) if p.size]


def first_audio_time(data: bytes) -> float:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for packet in container.demux(audio=0):
            if packet.pts is not None:
                return float(packet.pts * packet.time_base)
    raise AssertionError("no audio")


def test_template2_ladder_segments(source_720p: Path, tmp_path: Path) -> None:
    run = encode(2, [source_720p], "t2")
    sink = run.sink
    assert sink.starts == 1 and sink.finished == 1
    assert sink.segment_seconds == 2
    assert [(v.name, v.width, v.height) for v in sink.variants] == [
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]
    assert [v.target_bitrate_bps for v in sink.variants] == [2_928_000, 1_528_000, 928_000]
    assert all(v.frame_rate == 30 for v in sink.variants)
    assert run.events[0][0] == "EncoderStarted" and "3 renditions" in run.events[0][1]

    by_rendition = sink.by_rendition()
    assert set(by_rendition) == {"720p", "480p", "360p"}
    keyframe_times: dict[int, set[float]] = {}
    audio_by_sequence: dict[int, list[list[tuple[int, bytes]]]] = {}
    for variant in sink.variants:
        segments = by_rendition[variant.name]
        assert [s.sequence for s in segments] == list(range(len(segments)))
        total = sum(s.duration_seconds for s in segments)
        assert abs(total - 6.0) < sink.segment_seconds  # the source's duration
        frames = 0
        for segment in segments:
            streams, video = probe_segment(segment, tmp_path)
            # Decodable alone, at the rendition's size, starting on its only keyframe.
            assert {(f["width"], f["height"]) for f in video} == {(variant.width, variant.height)}
            assert video[0]["key_frame"] == 1 and video[0]["pict_type"] == "I"
            assert sum(f["key_frame"] for f in video) == 1  # closed GOP = one segment
            frames += len(video)
            first_pts = float(video[0]["pts_time"])
            starts_at = segment.start_seconds + float(TS_PTS_OFFSET)
            if segment.sequence == 0:  # shown from its sound's start: < 1 AAC frame early
                assert starts_at - 1024 / 48000 - 1e-3 <= first_pts <= starts_at + 1e-3
                assert first_audio_time(segment.data) == pytest.approx(first_pts, abs=1e-3)
            else:
                assert first_pts == pytest.approx(starts_at, abs=1e-3)
            assert segment.keyframe_pts is not None
            assert float(segment.keyframe_pts) == pytest.approx(segment.start_seconds)
            keyframe_times.setdefault(segment.sequence, set()).add(first_pts)
            # CODECS as the real stream says.
            codec = variant.codecs.split(",")
            assert codec[1] == "mp4a.40.2" and streams["audio"]["codec_name"] == "aac"
            assert int(codec[0][5:7], 16) == PROFILE_IDC[streams["video"]["profile"]]
            assert int(codec[0][9:11], 16) == streams["video"]["level"]
            # Audio in sync with the video it is muxed with.
            assert abs(first_audio_time(segment.data) - first_pts) < 0.05
            audio_by_sequence.setdefault(segment.sequence, []).append(audio_packets(segment.data))
        assert frames == 180  # every source frame, once
    # Keyframes at the same instants in every rendition (also the cut points): the
    # frame nearest each 2 s boundary (the source's first picture is 21 ms in, its
    # millisecond timestamps put the frame nearest 2 s at 1.988 s).
    assert all(len(times) == 1 for times in keyframe_times.values())
    instants = sorted(next(iter(t)) - float(TS_PTS_OFFSET) for t in keyframe_times.values())
    assert instants[0] < 1 / 30 and len(instants) >= 3  # the first picture, then each 2 s
    assert all(abs(t - 2 * round(t / 2)) < 1 / 60 for t in instants[1:]), instants
    # AAC encoded once: the same packets in every rendition's segment.
    for sequence, renditions in audio_by_sequence.items():
        assert renditions[0], f"no audio in segment {sequence}"
        assert all(packets == renditions[0] for packets in renditions)

    stats = {s.name: s for s in run.encoder.stats()}
    assert set(stats) == {"720p", "480p", "360p"}
    for variant in sink.variants:
        row = stats[variant.name]
        assert (row.width, row.height) == (variant.width, variant.height)
        assert row.frames_encoded == 180 and row.dropped_frames == 0
        assert row.fps == pytest.approx(30, abs=0.5)
        # Measured from the segments: within a third of the target (video + audio + TS).
        assert 0.66 < row.bitrate_bps / variant.target_bitrate_bps < 1.5


def test_concatenated_rendition_plays_through(source_720p: Path, tmp_path: Path) -> None:
    run = encode(2, [source_720p], "concat")
    segments = run.sink.by_rendition()["360p"]
    joined_packets(segments, tmp_path / "all.ts")


def test_drains_x264_at_boundaries_only_when_keeping_up(
    source_360p: Path, source_720p: Path, tmp_path: Path
) -> None:
    # Fed faster than it encodes (the queue stays full): no drain, x264 runs on (but at
    # the last boundary, the frame nearest 6 s, where the queue has emptied: one drain
    # per rendition at most).
    flooded = encode(2, [source_720p], "flooded")
    assert flooded.encoder.drains <= 3
    # A live pace (each item taken before the next): segments are drained out at their
    # boundary, and the rendition still plays through as one stream.
    run = make_encoder(2, "paced")
    feed(
        source_360p,
        run.queue,
        on_item=lambda _: wait_until(lambda: len(run.queue) == 0),
    )
    run.queue.close()
    run.encoder.stop(timeout_seconds=60)
    assert run.encoder.failed is None and run.encoder.drains > 0
    segments = run.sink.by_rendition()["360p"]
    video = [
        p for p in joined_packets(segments, tmp_path / "paced.ts") if p["codec_type"] == "video"
    ]
    with av.open(str(source_360p)) as source:
        assert len(video) == sum(1 for _ in source.demux(video=0) if _.size)  # every frame
    keys = [p["pts"] for p in video if "K" in p["flags"]]
    assert len(keys) == len(segments)  # one IDR per segment, none added by reopening


def test_small_source_is_not_upscaled(source_360p: Path, tmp_path: Path) -> None:
    run = encode(1, [source_360p], "no-upscale")
    run.encoder.start()  # idempotent, even after stop()
    run.encoder.stop()
    assert run.sink.starts == 1 and run.sink.finished == 1
    assert [(v.name, v.width, v.height) for v in run.sink.variants] == [("360p", 640, 360)]
    assert {s.rendition for s in run.sink.segments} == {"360p"}
    for segment in run.sink.segments:
        _, video = probe_segment(segment, tmp_path)
        assert {(f["width"], f["height"]) for f in video} == {(640, 360)}


def test_reconnect_continues_the_timeline(source_360p: Path, tmp_path: Path) -> None:
    run = encode(2, [source_360p, source_360p], "reconnect")
    segments = run.sink.by_rendition()["360p"]
    assert [s.sequence for s in segments] == list(range(len(segments)))
    for before, after in itertools.pairwise(segments):
        assert after.start_seconds == pytest.approx(
            before.start_seconds + before.duration_seconds, abs=1e-6
        )
        assert after.start_seconds > before.start_seconds
    flagged = [s for s in segments if s.discontinuity]
    assert len(flagged) == 1
    reconnect = flagged[0]
    # The first segment of session 1: the source restarted at zero, the output did not.
    assert 2.9 < reconnect.start_seconds < 3.2
    assert all(
        s.start_seconds < reconnect.start_seconds
        for s in segments
        if s.sequence < reconnect.sequence
    )
    _, video = probe_segment(reconnect, tmp_path)
    assert video[0]["key_frame"] == 1
    assert abs(sum(s.duration_seconds for s in segments) - 6.0) < 2
    packets = joined_packets(segments, tmp_path / "all.ts")
    assert sum(1 for p in packets if p["codec_type"] == "video") == 180
    assert any(status == "EncoderSessionStarted" for status, _ in run.events)


def test_reconnect_with_another_size_keeps_the_outputs(
    source_480p: Path, source_360p: Path, tmp_path: Path
) -> None:
    run = encode(2, [source_480p, source_360p], "resize")
    assert [(v.name, v.width, v.height) for v in run.sink.variants] == [
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]
    for variant in run.sink.variants:
        segments = run.sink.by_rendition()[variant.name]
        assert any(s.discontinuity for s in segments)
        frames = 0
        for segment in segments:
            _, video = probe_segment(segment, tmp_path)
            assert {(f["width"], f["height"]) for f in video} == {(variant.width, variant.height)}
            frames += len(video)
        assert frames == 180


def test_a_failing_rendition_fails_the_encoder_alone(
    source_480p: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RenditionWorker._encode
    boom = RuntimeError("x264 exploded")

    def failing(self: RenditionWorker, frame: av.VideoFrame | None) -> list[av.Packet]:
        if self.plan.name == "360p" and self.frames_encoded >= 10 and "fail" in self._prefix:
            raise boom
        return original(self, frame)

    monkeypatch.setattr(RenditionWorker, "_encode", failing)
    healthy = make_encoder(2, "healthy")
    failing_run = make_encoder(2, "fail")
    feeders = [
        threading.Thread(
            target=feed, args=(source_480p, failing_run.queue), kwargs={"block": False}
        ),
        threading.Thread(target=feed, args=(source_480p, healthy.queue)),
    ]
    for feeder in feeders:
        feeder.start()
    wait_until(lambda: failing_run.encoder.failed is not None, what="the encoder to fail")
    assert failing_run.encoder.failed is boom
    # Every thread of the failed encoder ends by itself, before stop().
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("encoder-fail-")],
        what="the failed encoder's threads to end",
    )
    for feeder in feeders:
        feeder.join(30)
    failing_run.queue.close()
    failing_run.encoder.stop(timeout_seconds=10)
    assert failing_run.failures == [boom]  # once
    # The other encoder in the process is untouched.
    healthy.queue.close()
    healthy.encoder.stop(timeout_seconds=60)
    assert healthy.encoder.failed is None
    assert [s.frames_encoded for s in healthy.encoder.stats()] == [90, 90]


def test_slow_sink_drops_and_counts_with_bounded_queues(source_480p: Path) -> None:
    release = threading.Event()
    tuning = EncoderTuning(rendition_queue_frames=4, handoff_timeout_seconds=0.05)

    def stuck(segment: Segment) -> None:
        release.wait(60)  # the sink hangs until the feed is over

    sink = CollectingSink(on_segment=stuck)
    run = make_encoder(2, "slow", tuning=tuning, sink=sink, queue_items=30)
    peaks: Counter[str] = Counter()

    def sample(_: int) -> None:
        peaks["media"] = max(peaks["media"], len(run.queue))
        for worker in _workers(run.encoder):
            peaks[worker.plan.name] = max(peaks[worker.plan.name], worker._handoff.frames)

    offered = feed(source_480p, run.queue, block=False, on_item=sample)
    feed(source_480p, run.queue, session=1, block=False, on_item=sample)
    release.set()
    run.queue.close()
    run.encoder.stop(timeout_seconds=60)
    assert run.encoder.failed is None
    stats = run.encoder.stats()
    dropped = sum(s.dropped_frames for s in stats) + run.queue.dropped_video
    assert dropped > 0  # the slow sink cost frames, and they were counted
    for row in stats:
        delivered = 2 * 90 - run.queue.dropped_video
        assert row.frames_encoded + row.dropped_frames == delivered
    assert peaks["media"] <= 30 + 2  # + SessionEnd/SessionStart, never dropped
    assert all(peaks[w] <= 4 for w in ("480p", "360p"))
    assert offered > 0 and sink.finished == 1


def _workers(encoder: LiveEncoder) -> list[RenditionWorker]:
    """The rendition workers (white box: only to sample their queue sizes)."""
    return list(getattr(encoder._mode, "workers", []))


class TimingOutSink(CollectingSink):
    """A sink whose uploads never finish in time (a storage outage at shutdown)."""

    def __init__(self) -> None:
        super().__init__()
        self.finish_timeouts: list[float] = []

    def finish(self, timeout_seconds: float) -> None:
        self.finish_timeouts.append(timeout_seconds)
        raise TimeoutError("uploads still pending (test)")


def test_stop_gives_the_sink_what_is_left_then_closes_it(source_360p: Path) -> None:
    sink = TimingOutSink()
    run = make_encoder(2, "bounded", sink=sink)
    feed(source_360p, run.queue)
    run.queue.close()
    started = time.monotonic()
    run.encoder.stop(timeout_seconds=20, finish_timeout_seconds=5)
    took = time.monotonic() - started
    assert sink.segments and run.encoder.failed is None
    # The flush took part of its 20 s: the sink gets the 5 s plus what the flush left.
    [given] = sink.finish_timeouts
    assert 5 <= given <= 25 - took + 0.1
    assert sink.closed == 1  # past the bound: closed (the HLS writer keeps its spool)
    run.encoder.stop()  # idempotent
    assert sink.closed == 1 and len(sink.finish_timeouts) == 1
