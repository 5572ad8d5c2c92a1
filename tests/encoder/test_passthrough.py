"""Template 3: the source's packets repackaged into TS segments, bit for bit."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import av
import pytest

from encoder.codecs import annexb_nal_units, avc1_codec_string, avcc_nal_units
from encoder.live_encoder import LiveEncoder
from encoder.templates import get_template
from ingest.decode import LiveDecoder
from ingest.media import MediaQueue
from ingest.session import MPEGTS
from media.segments import Segment
from tests.support.fakes import CollectingSink
from tests.support.media import feed, ffmpeg_warnings, ffprobe, make_source

ADDED_BY_TS = {7, 8, 9}  # SPS, PPS (before keyframes) and AUDs the TS muxer inserts


def passthrough(sources: list[Path]) -> tuple[CollectingSink, LiveEncoder]:
    sink = CollectingSink()
    queue = MediaQueue()
    encoder = LiveEncoder(get_template(3), queue, sink, label="copy")
    encoder.start()
    keep: list[Any] = []
    for session, source in enumerate(sources):
        feed(source, queue, session, decode=False, keep=keep)
    queue.close()
    encoder.stop(timeout_seconds=30)
    assert encoder.failed is None
    return sink, encoder


def source_packets(path: Path) -> tuple[list[list[bytes]], list[bytes], bytes]:
    """(video packets as NAL lists, raw AAC packets, avcC) of the source; the audio from
    the first picture (the copy drops the sound before it: it has no picture)."""
    with av.open(str(path)) as container:
        extradata = container.streams.video[0].codec_context.extradata or b""
        video: list[list[bytes]] = []
        audio: list[tuple[float, bytes]] = []  # (end, payload)
        first_picture: float | None = None
        for packet in container.demux():
            if not packet.size or packet.pts is None:
                continue
            if packet.stream.type == "video":
                video.append(
                    [n for n in avcc_nal_units(bytes(packet)) if n[0] & 0x1F not in ADDED_BY_TS]
                )
                if first_picture is None:
                    first_picture = float(packet.pts * packet.time_base)
            else:
                end = float((packet.pts + packet.duration) * packet.time_base)
                audio.append((end, bytes(packet)))
    assert first_picture is not None
    return video, [data for end, data in audio if end > first_picture + 1e-6], extradata


def segment_packets(segments: list[Segment]) -> tuple[list[list[bytes]], list[bytes], list[bool]]:
    """(video NAL lists, AAC payloads without ADTS headers, keyframe flags) of the segments."""
    video: list[list[bytes]] = []
    audio: list[bytes] = []
    keyframes: list[bool] = []
    for segment in segments:
        with av.open(io.BytesIO(segment.data), format="mpegts") as container:
            for packet in container.demux():
                if not packet.size:
                    continue
                data = bytes(packet)
                if packet.stream.type == "video":
                    video.append(
                        [n for n in annexb_nal_units(data) if n[0] & 0x1F not in ADDED_BY_TS]
                    )
                    keyframes.append(packet.is_keyframe)
                else:
                    assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0  # ADTS
                    header = 7 if data[1] & 0x01 else 9  # protection_absent
                    audio.append(data[header:])
    return video, audio, keyframes


def test_packets_are_copied_bit_for_bit(source_360p: Path, tmp_path: Path) -> None:
    sink, encoder = passthrough([source_360p])
    src_video, src_audio, avcc = source_packets(source_360p)
    # The live probe reported 0x0: the size comes from the SPS.
    (variant,) = sink.variants
    assert (variant.name, variant.width, variant.height) == ("source", 640, 360)
    assert variant.codecs == f"{avc1_codec_string(avcc)},mp4a.40.2"

    segments = sink.by_rendition()["source"]
    # A copy's bitrate is the publisher's: measured on the first segment.
    first = segments[0]
    assert variant.target_bitrate_bps == round(len(first.data) * 8 / first.duration_seconds)
    video, audio, keyframes = segment_packets(segments)
    assert video == src_video
    assert audio == src_audio
    assert sum(keyframes) == 3  # one-second source GOPs, all kept
    # Cut on the source keyframe at/after each 2 s boundary.
    # (The timeline starts at the session's first keyframe.)
    assert len(segments) == 2
    assert segments[1].start_seconds - segments[0].start_seconds == pytest.approx(2.0, abs=1e-3)
    assert segments[0].start_seconds < 0.05
    for segment in segments:
        info, errors = ffprobe(
            tmp_path / f"{segment.sequence}.ts",
            "-show_entries",
            "frame=media_type,key_frame",
            data=segment.data,
        )
        assert errors == ""
        stream = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert (stream["width"], stream["height"]) == (640, 360)
        assert int(variant.codecs[9:11], 16) == stream["level"]
        assert next(f for f in info["frames"] if f["media_type"] == "video")["key_frame"] == 1
    source_info, _ = ffprobe(source_360p)
    source_stream = next(s for s in source_info["streams"] if s["codec_type"] == "video")
    for key in ("profile", "level", "width", "height", "pix_fmt"):
        assert stream[key] == source_stream[key]
    (row,) = encoder.stats()
    assert row.frames_encoded == 90 and row.dropped_frames == 0


def test_an_mpegts_source_srt_and_hls_send_is_copied_with_its_audio(tmp_path: Path) -> None:
    """An MPEG-TS session (SRT, HLS push and pull): its live probe knows the AAC's rate
    and channels only from the ADTS headers; the copy is muxed with them."""
    source = make_source(tmp_path / "source.ts", 320, 180, 4, fmt="mpegts")
    sink = CollectingSink()
    queue = MediaQueue()
    encoder = LiveEncoder(get_template(3), queue, sink, label="copy")
    encoder.start()
    decoder = LiveDecoder(queue, decode=False, label="srt")  # as the SRT server feeds it
    decoder.start_session(MPEGTS)
    decoder.on_data(source.read_bytes())
    decoder.end_session("unpublished")
    decoder.stop()
    queue.close()
    encoder.stop(timeout_seconds=30)
    assert encoder.failed is None
    segments = sink.by_rendition()["source"]
    video, audio, keyframes = segment_packets(segments)
    with av.open(str(source)) as container:  # (start, end) of each packet, in seconds
        times: dict[str, list[tuple[float, float]]] = {"video": [], "audio": []}
        for p in container.demux():
            if p.size and p.pts is not None:
                span = (p.pts * p.time_base, (p.pts + p.duration) * p.time_base)
                times[p.stream.type].append((float(span[0]), float(span[1])))
    pictures, sound = times["video"], times["audio"]
    first_picture = min(start for start, _ in pictures)
    # Every picture; the sound from the first picture on (before it, it has none).
    assert len(video) == len(pictures)
    assert len(audio) == sum(end > first_picture + 1e-6 for _, end in sound)
    assert len(audio) >= len(sound) - 2
    assert sum(keyframes) == 4 and len(segments) == 2
    (variant,) = sink.variants
    assert variant.codecs.endswith(",mp4a.40.2")
    source_info, _ = ffprobe(source)
    (published,) = [s for s in source_info["streams"] if s["codec_type"] == "audio"]
    for segment in segments:
        info, errors = ffprobe(tmp_path / f"{segment.sequence}.ts", data=segment.data)
        assert errors == ""
        (sound,) = [s for s in info["streams"] if s["codec_type"] == "audio"]
        assert (sound["sample_rate"], sound["channels"]) == (
            published["sample_rate"],
            published["channels"],
        )


def test_passthrough_reconnect(source_360p: Path) -> None:
    sink, _ = passthrough([source_360p, source_360p])
    segments = sink.by_rendition()["source"]
    assert [s.discontinuity for s in segments].count(True) == 1
    for before, after in itertools.pairwise(segments):
        assert after.start_seconds == pytest.approx(
            before.start_seconds + before.duration_seconds, abs=1e-6
        )
    flagged = next(s for s in segments if s.discontinuity)
    assert 2.9 < flagged.start_seconds < 3.2
    video, _, _ = segment_packets(segments)
    src_video, _, _ = source_packets(source_360p)
    assert video == src_video + src_video


def test_a_switch_from_an_mpegts_input_whose_sound_outlasts_its_picture(tmp_path: Path) -> None:
    """A Standard job's switch as the relay makes it: an MPEG-TS primary (SRT) whose
    audio runs 0.3 s past its video, then an FLV backup (the relay is RTMP) with its
    own audio parameters. Each input's sound stays in its own run (the backup's
    before its first keyframe never in the primary's last segment, muxed with the
    primary's parameters), and never goes back in time across the switch."""
    primary = make_source(tmp_path / "primary.ts", 320, 180, 3, fmt="mpegts", audio_seconds=3.3)
    backup = make_source(tmp_path / "backup.flv", 320, 180, 3)
    sink = CollectingSink()
    queue = MediaQueue()
    encoder = LiveEncoder(get_template(3), queue, sink, label="copy")
    encoder.start()
    decoder = LiveDecoder(queue, decode=False, label="srt")
    decoder.start_session(MPEGTS)
    decoder.on_data(primary.read_bytes())
    decoder.end_session("unpublished")
    decoder.stop()
    keep: list[Any] = []
    feed(backup, queue, 1, decode=False, keep=keep)
    queue.close()
    encoder.stop(timeout_seconds=30)
    assert encoder.failed is None
    segments = sink.by_rendition()["source"]
    assert [s.discontinuity for s in segments].count(True) == 1
    recording = tmp_path / "recording.ts"
    recording.write_bytes(b"".join(s.data for s in segments))
    for segment in segments:
        path = tmp_path / f"{segment.sequence}.ts"
        path.write_bytes(segment.data)
        assert ffmpeg_warnings(path) == "", segment
    assert ffmpeg_warnings(recording) == ""
    sound: list[tuple[int, int]] = []  # (pts, dts) in 90 kHz ticks
    with av.open(str(recording)) as container:
        for packet in container.demux(audio=0):
            if packet.size:
                sound.append((packet.pts, packet.dts))
    frame = 1920  # 1024 samples at 48 kHz
    assert all(b[1] > a[1] for a, b in itertools.pairwise(sound))  # DTS go forward
    assert all(b[0] - a[0] >= frame - 90 for a, b in itertools.pairwise(sound))  # no overlap
