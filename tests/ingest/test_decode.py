"""LiveDecoder fed with the tags of an FLV made by ffmpeg (no network here).

MPEG-TS sessions and the wall-clock origin: test_decode_mpegts.py, test_wall_clock.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import pytest

import ingest.decode
from ingest.decode import LiveDecoder
from ingest.formats import flv
from ingest.media import MediaQueue, SessionEnd, SessionStart
from ingest.session import FLV, MPEGTS
from tests.support.fakes import Collector
from tests.support.media import decode_file_pts, items_until_a_video_frame, sample_tags
from tests.support.waiting import wait_until


def publish(decoder: LiveDecoder, path: Path, *, end: str | None = "done") -> int:
    metadata, tags = sample_tags(path)
    index = decoder.start_session()
    decoder.on_metadata(metadata)
    for tag in tags:
        decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
    if end is not None:
        decoder.end_session(end)
    return index


@pytest.fixture
def queue() -> MediaQueue:
    return MediaQueue(max_items=100_000)


def test_every_frame_is_decoded_with_its_timestamp(flv_sample: Path, queue: MediaQueue) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue, label="t")
    try:
        publish(decoder, flv_sample)
        collector.wait_ends(1)
        video_pts, audio_pts = decode_file_pts(flv_sample)
        assert len(video_pts) == 90
        assert collector.pts("video") == video_pts
        assert collector.pts("audio") == audio_pts
        assert decoder.video_frames == 90
        assert decoder.audio_frames == len(audio_pts)
        start = collector.starts[0]
        assert start.video is not None and start.audio is not None
        assert (start.video.codec_name, start.video.width, start.video.height) == ("h264", 320, 240)
        assert (start.audio.codec_name, start.audio.sample_rate, start.audio.channels) == (
            "aac",
            48000,
            1,
        )
        assert collector.ends == [SessionEnd(0, "done")]
        stats = decoder.stats()
        assert (stats.width, stats.height, stats.framerate) == (320, 240, 30)
        assert (stats.video_codec_id, stats.audio_codec_id) == (7, 10)
        assert (stats.audio_sample_rate, stats.audio_channels, stats.stereo) == (
            48000,
            1,
            False,
        )
        assert stats.audio_sample_size == 16
        assert stats.encoder.startswith("Lavf")
    finally:
        decoder.stop()
        collector.stop()


def test_frames_come_out_at_once_not_after_probing(flv_sample: Path, queue: MediaQueue) -> None:
    metadata, tags = sample_tags(flv_sample)
    decoder = LiveDecoder(queue)
    try:
        decoder.start_session()
        decoder.on_metadata(metadata)
        first_frames = [t for t in tags if t.timestamp_ms <= 400]
        started = time.monotonic()
        for tag in first_frames:
            decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        got = items_until_a_video_frame(queue, 1.0)
        assert time.monotonic() - started < 1.0
        assert isinstance(got[0], SessionStart)
    finally:
        decoder.stop()


def test_two_sessions_come_out_in_order(flv_sample: Path, queue: MediaQueue) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        assert publish(decoder, flv_sample, end="first gone") == 0
        assert publish(decoder, flv_sample, end="second gone") == 1  # before 0 drained
        collector.wait_ends(2)
        boundaries = [e for e in collector.events if e[0] in ("start", "end")]
        assert boundaries == [
            ("start", 0),
            ("end", 0, "first gone"),
            ("start", 1),
            ("end", 1, "second gone"),
        ]
        events = collector.events
        first_end = events.index(("end", 0, "first gone"))
        second_start = events.index(("start", 1))
        assert len([e for e in events[:first_end] if e[0] == "video"]) == 90
        assert len([e for e in events[second_start:] if e[0] == "video"]) == 90
    finally:
        decoder.stop()
        collector.stop()


def test_starting_a_session_ends_the_current_one(flv_sample: Path, queue: MediaQueue) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        assert decoder.start_session() == 0
        assert decoder.start_session() == 1
        assert decoder.current_session == 1
        _, tags = sample_tags(flv_sample)
        for tag in tags:
            decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        decoder.end_session("bye")
        collector.wait_ends(2)
        assert [(e.session, e.reason) for e in collector.ends] == [
            (0, "replaced by a new session"),
            (1, "bye"),
        ]
        assert collector.starts[0] == SessionStart(0, None, None)
        assert len(collector.kinds("video")) == 90
    finally:
        decoder.stop()
        collector.stop()


def test_a_session_is_fed_as_its_container_says(queue: MediaQueue) -> None:
    decoder = LiveDecoder(queue)
    try:
        with pytest.raises(ValueError, match="unknown container"):
            decoder.start_session("mp4")
        decoder.start_session(MPEGTS)
        with pytest.raises(ValueError, match="mpegts bytes, not tags"):
            decoder.on_media(9, 0, b"\x17\x01")
        decoder.start_session(FLV)
        with pytest.raises(ValueError, match="is FLV"):
            decoder.on_data(b"\x47")
    finally:
        decoder.stop()


def test_passthrough_puts_packets(flv_sample: Path, queue: MediaQueue) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue, decode=False)
    try:
        publish(decoder, flv_sample)
        collector.wait_ends(1)
        _, tags = sample_tags(flv_sample)
        video_tags = [t for t in tags if t.kind == 9 and flv.video_info(t.payload).frame]  # type: ignore[union-attr]
        packets = collector.kinds("packet")
        assert len([p for p in packets if p[1] == "video"]) == len(video_tags) == 90
        assert all(p[3] > 0 for p in packets)
        assert not collector.kinds("video")
        assert decoder.video_frames == 90
    finally:
        decoder.stop()
        collector.stop()


@pytest.mark.slow  # real time or subprocesses: left out of make test-fast
def test_unread_queue_drops_and_counts(flv_sample: Path) -> None:
    queue = MediaQueue(max_items=8)  # nobody reads it
    decoder = LiveDecoder(queue)
    try:
        publish(decoder, flv_sample)
        wait_until(lambda: decoder.video_frames == 90 and queue.dropped > 0, 30, "decoding")
        decoder.stop()
        assert len(queue) <= 8 + 2  # control items are never dropped
        assert queue.dropped >= 90 - 8
    finally:
        decoder.stop()


def test_feed_cap_drops_whole_tags_and_keeps_decoding_clean(
    flv_sample: Path, queue: MediaQueue
) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue, max_buffered_bytes=24_000)
    try:
        publish(decoder, flv_sample)  # all of it at once: far faster than decoding
        collector.wait_ends(1)
        assert decoder.dropped_writes > 0
        assert 0 < len(collector.kinds("video")) < 90
        assert decoder.decode_errors == 0  # video dropped until a keyframe: no broken refs
    finally:
        decoder.stop()
        collector.stop()


def test_a_stream_that_starts_late_is_ignored_not_fatal(
    flv_sample: Path, queue: MediaQueue
) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        _, tags = sample_tags(flv_sample)
        decoder.start_session()
        for tag in tags:  # no metadata; audio only from 1.5 s on
            if tag.kind == 9 or tag.timestamp_ms > 1500:
                decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        decoder.end_session("done")
        collector.wait_ends(1)
        assert collector.starts[0].audio is None
        assert len(collector.kinds("video")) == 90
        assert not collector.kinds("audio")
        assert collector.ends[0].reason == "done"
    finally:
        decoder.stop()
        collector.stop()


def test_video_only_declared_by_metadata_opens_without_waiting(
    flv_sample: Path, queue: MediaQueue
) -> None:
    metadata, tags = sample_tags(flv_sample)
    video_only = {k: v for k, v in metadata.items() if not k.startswith("audio") and k != "stereo"}
    decoder = LiveDecoder(queue)
    try:
        decoder.start_session()
        decoder.on_metadata(video_only)
        for tag in [t for t in tags if t.kind == 9 and t.timestamp_ms <= 200]:
            decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        first = queue.get(2.0)
        assert isinstance(first, SessionStart)
        assert first.video is not None and first.audio is None
    finally:
        decoder.stop()


def test_pyav_errors_end_the_session_and_are_reported(
    flv_sample: Path, queue: MediaQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_open(*args: Any, **kwargs: Any) -> Any:
        raise av.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(ingest.decode.av, "open", broken_open)
    errors: list[BaseException] = []
    collector = Collector(queue)
    decoder = LiveDecoder(queue, on_error=errors.append)
    try:
        publish(decoder, flv_sample)
        collector.wait_ends(1)
        assert collector.starts == [SessionStart(0, None, None)]
        assert collector.ends[0].reason.startswith("decode error:")
        assert len(errors) == 1 and isinstance(errors[0], av.InvalidDataError)
    finally:
        decoder.stop()
        collector.stop()


def test_session_without_media_still_starts_and_ends(queue: MediaQueue) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        decoder.start_session()
        decoder.end_session("nothing sent")
        collector.wait_ends(1)
        assert collector.events == [("start", 0), ("end", 0, "nothing sent")]
        assert decoder.stats().width == 0
    finally:
        decoder.stop()
        collector.stop()


def test_stop_is_idempotent_and_final(queue: MediaQueue) -> None:
    decoder = LiveDecoder(queue)
    decoder.start_session()
    decoder.stop()
    decoder.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        decoder.start_session()
    decoder.on_media(9, 0, b"\x17\x01")  # ignored, no error


def test_audio_arriving_after_some_video_is_still_found(
    flv_sample: Path, queue: MediaQueue
) -> None:
    """PyAV probes about two packets: the first audio tag must be among them."""
    _, tags = sample_tags(flv_sample)
    video = [t for t in tags if t.kind == 9]
    audio = [t for t in tags if t.kind == 8]
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        decoder.start_session()
        for tag in [*video[:6], *audio, *video[6:]]:  # no metadata; audio after 6 video tags
            decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        decoder.end_session("done")
        collector.wait_ends(1)
        assert collector.starts[0].audio is not None
        assert len(collector.kinds("audio")) == len(decode_file_pts(flv_sample)[1])
        assert len(collector.kinds("video")) == 90
    finally:
        decoder.stop()
        collector.stop()
