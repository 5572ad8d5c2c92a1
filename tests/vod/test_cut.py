"""The frame-accurate cut, against a real recording in SeaweedFS, checked as a user
would: ffprobe/ffmpeg on the VOD, its frames against the source's, its bytes."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest

from encoder.codecs import h264_header_sps
from packager.object_store import S3Storage
from tests.support.media import ffmpeg_warnings, ffprobe
from tests.support.mpegts import Segment, check_continuity
from tests.support.recording import GAP_SECONDS, Recorded, decoded_frames, psnr
from vod import CutCancelled, CutError, CutRequest, CutResult, cut_video, recorded_timeline

FPS = 30
AAC_FRAME_SECONDS = 1024 / 48000
SIZES = {"180p": (320, 180), "144p": (256, 144)}


class LoggingStorage(S3Storage):
    """S3Storage that remembers which keys it wrote, in order, and how."""

    def __init__(self, storage: S3Storage) -> None:
        self.__dict__.update(storage.__dict__)
        self.writes: list[tuple[str, str]] = []  # (how, key)

    def put(self, bucket: str, key: str, *args: Any, **kwargs: Any) -> None:
        super().put(bucket, key, *args, **kwargs)
        self.writes.append(("put", key))

    def copy(self, bucket: str, source_key: str, key: str, *args: Any, **kwargs: Any) -> None:
        super().copy(bucket, source_key, key, *args, **kwargs)
        self.writes.append(("copy", key))

    def put_file(self, bucket: str, key: str, *args: Any, **kwargs: Any) -> None:
        super().put_file(bucket, key, *args, **kwargs)
        self.writes.append(("put_file", key))


def cut(
    recorded: Recorded, name: str, from_ms: int, to_ms: int, storage: S3Storage | None = None
) -> CutResult:
    request = CutRequest(
        bucket=recorded.bucket,
        live_prefix=recorded.prefix,
        video_prefix=f"{recorded.prefix}/videos/{name}",
        since=None,
        from_ms=from_ms,
        to_ms=to_ms,
    )
    return cut_video(storage or recorded.storage, request)


def download(recorded: Recorded, prefix: str, into: Path) -> Path:
    """Every object under `prefix`, as files under `into` (the VOD as a player sees it)."""
    client = recorded.storage.client
    listing = client.list_objects_v2(Bucket=recorded.bucket, Prefix=prefix + "/")
    for item in listing.get("Contents", []):
        path = into / item["Key"][len(prefix) + 1 :]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=recorded.bucket, Key=item["Key"])["Body"].read())
    return into


def packets(path: Path) -> list[dict[str, Any]]:
    info, errors = ffprobe(path, "-show_entries", "packet=codec_type,pts_time,duration_time")
    assert errors == ""
    return list(info["packets"])


def best_match(frame: Any, source: list[Any], around: int) -> tuple[int, float]:
    """The source frame (index) nearest `around` that `frame` is most like, and its PSNR."""
    candidates = range(max(0, around - 6), min(len(source), around + 7))
    scores = {index: psnr(frame, source[index]) for index in candidates}
    index = max(scores, key=lambda i: scores[i])
    return index, scores[index]


def top_level_boxes(data: bytes) -> list[str]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def first_sps(data: bytes) -> bytes:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        for packet in container.demux(video=0):
            if packet.size:
                return h264_header_sps(bytes(packet))
    raise AssertionError("no video packet")


@pytest.fixture(scope="module")
def vod(
    recorded: Recorded, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CutResult, Path, LoggingStorage]:
    """The cut 3.5 s -> 9.7 s of the 20 s recording, downloaded."""
    logging_storage = LoggingStorage(recorded.storage)
    result = cut(recorded, "cut-a", 3500, 9700, logging_storage)
    root = download(recorded, f"{recorded.prefix}/videos/cut-a", tmp_path_factory.mktemp("vod-a"))
    return result, root, logging_storage


def test_every_rendition_starts_on_the_frame_at_from_and_ends_before_to(
    recorded: Recorded, vod: tuple[CutResult, Path, LoggingStorage]
) -> None:
    result, root, _ = vod
    assert result.renditions == ("180p", "144p")
    assert result.duration_ms == pytest.approx(6200, abs=1000 / FPS)
    for rendition, (width, height) in SIZES.items():
        playlist = root / rendition / "index.m3u8"
        parsed = m3u8.loads(playlist.read_text())
        assert parsed.playlist_type == "vod" and parsed.is_endlist
        video = [p for p in packets(playlist) if p["codec_type"] == "video"]
        assert len(video) == pytest.approx(6.2 * FPS, abs=1), rendition
        frames = decoded_frames(playlist)
        source = decoded_frames(recorded.source, width, height)
        first, first_score = best_match(frames[0], source, round(3.5 * FPS))
        last, _ = best_match(frames[-1], source, round(9.7 * FPS) - 1)
        assert first == round(3.5 * FPS), (rendition, first_score)
        assert first_score > 25, rendition
        assert abs(last - (round(9.7 * FPS) - 1)) <= 1, rendition


def test_inner_segments_are_the_lives_copied_and_edges_have_its_parameter_sets(
    recorded: Recorded, vod: tuple[CutResult, Path, LoggingStorage]
) -> None:
    result, root, storage = vod
    client = recorded.storage.client
    for rendition in SIZES:
        names = m3u8.loads((root / rendition / "index.m3u8").read_text()).segments.uri
        assert len(names) == 4  # [2 s, 4 s) edge, two whole 2 s segments, [8 s, 10 s) edge
        for number, live_number in ((1, 2), (2, 3)):
            live_key = f"{recorded.prefix}/{rendition}/seg_{live_number:06d}.ts"
            live = client.get_object(Bucket=recorded.bucket, Key=live_key)["Body"].read()
            assert (root / rendition / names[number]).read_bytes() == live
            assert (
                "copy",
                f"{recorded.prefix}/videos/cut-a/{rendition}/{names[number]}",
            ) in storage.writes
        live_sps = first_sps((root / rendition / names[1]).read_bytes())
        for edge in (names[0], names[-1]):
            assert first_sps((root / rendition / edge).read_bytes()) == live_sps
    assert result.copied_segments == 4 and result.reencoded_segments == 4


def test_the_vod_reads_without_a_warning_and_its_counters_run_on(
    vod: tuple[CutResult, Path, LoggingStorage],
) -> None:
    _, root, _ = vod
    assert ffmpeg_warnings(root / "master.m3u8") == ""
    for rendition in SIZES:
        playlist = m3u8.loads((root / rendition / "index.m3u8").read_text())
        segments = [
            Segment(s.uri, (root / rendition / s.uri).read_bytes(), bool(s.discontinuity))
            for s in playlist.segments
        ]
        report = check_continuity(segments)
        assert report.ok, report.summary()
        assert report.indicator_segments == []


def test_audio_is_cut_at_the_same_instants(vod: tuple[CutResult, Path, LoggingStorage]) -> None:
    _, root, _ = vod
    for rendition in SIZES:
        every = packets(root / rendition / "index.m3u8")
        audio = [p for p in every if p["codec_type"] == "audio"]
        video = [p for p in every if p["codec_type"] == "video"]
        total = sum(float(p["duration_time"]) for p in audio)
        assert total == pytest.approx(6.2, abs=AAC_FRAME_SECONDS), rendition
        video_start = min(float(p["pts_time"]) for p in video)
        audio_start = min(float(p["pts_time"]) for p in audio)
        assert audio_start == pytest.approx(video_start, abs=AAC_FRAME_SECONDS)


def test_the_first_segment_starts_audio_and_video_together(
    vod: tuple[CutResult, Path, LoggingStorage],
) -> None:
    """What hls.js takes as zero is the earliest decode time of either track: its first
    picture must be decoded when shown, and no audio come before it (else hls.js
    reports the hole before it, `bufferSeekOverHole`, and seeks over it)."""
    _, root, _ = vod
    for rendition in SIZES:
        first = m3u8.loads((root / rendition / "index.m3u8").read_text()).segments[0].uri
        info, errors = ffprobe(
            root / rendition / first, "-show_entries", "packet=codec_type,pts,dts"
        )
        assert errors == ""
        video = [p for p in info["packets"] if p["codec_type"] == "video"]
        audio = [p for p in info["packets"] if p["codec_type"] == "audio"]
        shown = min(int(p["pts"]) for p in video)
        assert int(video[0]["dts"]) == int(video[0]["pts"]) == shown, (rendition, video[:3])
        decoded = [int(p["dts"]) for p in video]
        assert decoded == sorted(set(decoded)), rendition
        assert all(int(p["dts"]) <= int(p["pts"]) for p in video), rendition
        audio_start = int(audio[0]["pts"])
        assert 0 <= audio_start - shown < AAC_FRAME_SECONDS * 90_000, (rendition, audio_start)


def test_the_mp4_is_the_top_rendition_with_faststart(
    vod: tuple[CutResult, Path, LoggingStorage],
) -> None:
    result, root, _ = vod
    assert result.original_file_key.endswith("/original.mp4")
    mp4 = root / "original.mp4"
    boxes = top_level_boxes(mp4.read_bytes())
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    assert ffmpeg_warnings(mp4) == ""
    info, _ = ffprobe(mp4, "-show_format")
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert (streams["video"]["width"], streams["video"]["height"]) == SIZES["180p"]
    assert int(streams["video"]["nb_frames"]) == pytest.approx(6.2 * FPS, abs=1)
    assert float(info["format"]["duration"]) == pytest.approx(6.2, abs=0.1)


def test_the_master_is_written_last(vod: tuple[CutResult, Path, LoggingStorage]) -> None:
    result, root, storage = vod
    assert storage.writes[-1] == ("put", result.master_key)
    assert [how for how, key in storage.writes if key == result.master_key] == ["put"]
    master = m3u8.loads((root / "master.m3u8").read_text())
    assert [p.uri for p in master.playlists] == ["180p/index.m3u8", "144p/index.m3u8"]


def test_the_same_cut_by_date_times_gives_the_same_frames(
    recorded: Recorded, vod: tuple[CutResult, Path, LoggingStorage], tmp_path: Path
) -> None:
    timeline = recorded_timeline(recorded.storage, recorded.bucket, recorded.prefix, None)
    assert timeline.first_program_time is not None
    start = timeline.first_program_time
    span = timeline.resolve(
        None, None, start + timedelta(milliseconds=3500), start + timedelta(milliseconds=9700)
    )
    assert span == (3500, 9700)
    cut(recorded, "cut-b", *span)
    again = download(recorded, f"{recorded.prefix}/videos/cut-b", tmp_path)
    _, root, _ = vod
    for rendition in SIZES:
        mine = m3u8.loads((again / rendition / "index.m3u8").read_text())
        theirs = m3u8.loads((root / rendition / "index.m3u8").read_text())
        assert mine.segments.uri == theirs.segments.uri
        assert [s.duration for s in mine.segments] == [s.duration for s in theirs.segments]
        frames = decoded_frames(again / rendition / "index.m3u8")
        before = decoded_frames(root / rendition / "index.m3u8")
        assert len(frames) == len(before)
        # The same pictures (x264 is not bit-exact from run to run; neighbours differ far more).
        assert min(psnr(a, b) for a, b in zip(frames, before, strict=True)) > 35


def test_the_timeline_is_the_recorded_media(recorded: Recorded) -> None:
    timeline = recorded_timeline(recorded.storage, recorded.bucket, recorded.prefix, None)
    assert timeline.renditions == ("180p", "144p")
    assert timeline.duration_ms == pytest.approx(20_000, abs=1000 / FPS)
    assert timeline.first_program_time is not None and timeline.last_program_time is not None
    assert (timeline.last_program_time - timeline.first_program_time) == timedelta(
        milliseconds=timeline.duration_ms
    )


def test_a_cut_across_a_reconnect_gap(gapped: Recorded, tmp_path: Path) -> None:
    timeline = recorded_timeline(gapped.storage, gapped.bucket, gapped.prefix, None)
    assert timeline.duration_ms == pytest.approx(16_000, abs=2 * 1000 / FPS)  # the gap not counted
    assert timeline.first_program_time is not None and timeline.last_program_time is not None
    wall = (timeline.last_program_time - timeline.first_program_time).total_seconds()
    assert wall == pytest.approx(16 + GAP_SECONDS, abs=0.1)
    # A date-time inside the gap starts at the media after it.
    in_gap = timeline.first_program_time + timedelta(seconds=8 + GAP_SECONDS / 2)
    second_start = timeline.resolve(None, None, in_gap, None)[0]
    assert second_start == pytest.approx(8000, abs=1000 / FPS)

    result = cut(gapped, "across", 5500, 11_300)  # 2.5 s of the first session, 3.3 s of the second
    assert result.duration_ms == pytest.approx(5800, abs=1000 / FPS)
    root = download(gapped, f"{gapped.prefix}/videos/across", tmp_path)
    assert ffmpeg_warnings(root / "master.m3u8") == ""
    for rendition, (width, height) in SIZES.items():
        playlist = m3u8.loads((root / rendition / "index.m3u8").read_text())
        assert sum(1 for s in playlist.segments if s.discontinuity) == 1
        segments = [
            Segment(s.uri, (root / rendition / s.uri).read_bytes(), bool(s.discontinuity))
            for s in playlist.segments
        ]
        report = check_continuity(segments)
        assert report.ok, report.summary()
        frames = decoded_frames(root / rendition / "index.m3u8")
        assert len(frames) == pytest.approx(5.8 * FPS, abs=1)
        source = decoded_frames(gapped.source, width, height)
        assert best_match(frames[0], source, round(5.5 * FPS))[0] == round(5.5 * FPS)
        # The last frame shown is the second session's frame at 3.3 s.
        assert (
            abs(best_match(frames[-1], source, round(3.3 * FPS) - 1)[0] - (round(3.3 * FPS) - 1))
            <= 1
        )


def test_since_leaves_out_an_earlier_live(gapped: Recorded) -> None:
    everything = recorded_timeline(gapped.storage, gapped.bucket, gapped.prefix, None)
    assert everything.first_program_time is not None
    since = everything.first_program_time + timedelta(seconds=8 + GAP_SECONDS / 2)
    current = recorded_timeline(gapped.storage, gapped.bucket, gapped.prefix, since)
    assert current.duration_ms == pytest.approx(8000, abs=1000 / FPS)
    assert current.first_program_time is not None and current.first_program_time >= since


def test_ranges_outside_the_recording_say_what_was_recorded(recorded: Recorded) -> None:
    timeline = recorded_timeline(recorded.storage, recorded.bucket, recorded.prefix, None)
    recorded_range = f"the recorded range is 0 to {timeline.duration_ms} ms"
    for from_ms, to_ms in ((0, timeline.duration_ms + 1), (-1, 1000), (5000, 5000), (6000, 5000)):
        with pytest.raises(CutError, match=recorded_range):
            timeline.resolve(from_ms, to_ms, None, None)
        with pytest.raises(CutError, match=recorded_range):
            cut(recorded, "refused", from_ms, to_ms)
    assert timeline.last_program_time is not None
    with pytest.raises(CutError, match=recorded_range):
        timeline.resolve(None, None, None, timeline.last_program_time + timedelta(seconds=1))
    assert (
        recorded.storage.has_objects(recorded.bucket, f"{recorded.prefix}/videos/refused/") is False
    )


def test_nothing_recorded(recorded: Recorded) -> None:
    with pytest.raises(CutError, match="nothing was recorded"):
        recorded_timeline(recorded.storage, recorded.bucket, "lives/never", None)
    assert recorded.storage.has_objects(recorded.bucket, recorded.prefix)
    later = recorded_timeline(recorded.storage, recorded.bucket, recorded.prefix, None)
    assert later.last_program_time is not None
    with pytest.raises(CutError, match="nothing was recorded since"):
        recorded_timeline(
            recorded.storage, recorded.bucket, recorded.prefix, later.last_program_time
        )


def test_a_cancelled_cut_writes_no_master(recorded: Recorded) -> None:
    cancel = threading.Event()
    cancel.set()
    request = CutRequest(
        recorded.bucket, recorded.prefix, f"{recorded.prefix}/videos/cancelled", None, 3500, 9700
    )
    with pytest.raises(CutCancelled):
        cut_video(recorded.storage, request, cancel=cancel)
    master = f"{recorded.prefix}/videos/cancelled/master.m3u8"
    assert recorded.storage.get_text(recorded.bucket, master) is None
