"""A rendition of the ladder as a restream's source items: the real encoder's encoded
track, through the adapter and the FLV muxer, is an FLV file ffmpeg reads silently,
every frame of the rendition in it, one timeline across publisher sessions."""

from __future__ import annotations

import json
import subprocess
import threading
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import pytest

from encoder.encoded import EncodedItem
from encoder.live_encoder import LiveEncoder
from encoder.templates import get_template
from ingest.formats import flv
from ingest.media import (
    AudioParams,
    MediaQueue,
    SessionEnd,
    SessionStart,
    SourceItem,
    SourcePacket,
    VideoParams,
)
from media.fanout import QueueClosed, Reader
from restream.flv import FlvMuxer
from restream.rendition import RenditionAdapter, unsupported
from tests.support.fakes import CollectingSink
from tests.support.media import SMALL_TEMPLATE, feed, ffmpeg_warnings, make_source

TOP = "180p"  # SMALL_TEMPLATE's first rung, at a 320x180 source's own size


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_source(tmp_path_factory.mktemp("rendition") / "src.flv", 320, 180, 4)


def encoded_items(source: Path, sessions: int) -> tuple[list[EncodedItem], int]:
    """Everything the real ladder puts on its encoded track for `sessions` publishes of
    `source`, and the frames it encoded for the top rendition."""
    queue = MediaQueue(120)
    encoder = LiveEncoder(get_template(SMALL_TEMPLATE), queue, CollectingSink(), label="rs")
    reader = encoder.encoded.subscribe("test", max_items=100_000, late=False)
    items: list[EncodedItem] = []
    collector = threading.Thread(target=collect, args=(reader, items))
    collector.start()
    encoder.start()
    for session in range(sessions):
        feed(source, queue, session)
    queue.close()
    encoder.stop()
    collector.join(10)
    frames = next(s.frames_encoded for s in encoder.stats() if s.name == TOP)
    assert reader.dropped_total == 0
    return items, frames


def collect(reader: Reader[EncodedItem], into: list[EncodedItem]) -> None:
    try:
        while True:
            item = reader.get(timeout=0.1)
            if item is not None:
                into.append(item)
    except QueueClosed:
        pass


def write_flv(items: list[SourceItem], path: Path) -> FlvMuxer:
    """The items muxed as a restream would, written as an FLV file."""
    muxer = FlvMuxer()
    data = bytearray(flv.file_header())
    for item in items:
        if isinstance(item, SessionStart):
            assert item.video is not None and item.audio is not None
            tags = muxer.session_start(item, item.video.extradata, item.audio.extradata)
        elif isinstance(item, SourcePacket):
            tags = muxer.packet(item)
        else:
            continue
        for tag in tags:
            data += tag.to_bytes()
    path.write_bytes(bytes(data))
    return muxer


def video_frames(path: Path) -> list[float]:
    result = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-of", "json", "-select_streams", "v"),
            *("-show_entries", "frame=pts_time,width,height", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frames = json.loads(result.stdout)["frames"]
    assert {(f["width"], f["height"]) for f in frames} == {(320, 180)}
    return [float(f["pts_time"]) for f in frames]


def adapted(items: list[EncodedItem], name: str | None = TOP) -> list[SourceItem]:
    adapter = RenditionAdapter(lambda: name)
    out: list[SourceItem] = []
    for item in items:
        out += adapter.feed(item)
    return out


def test_the_top_rendition_is_an_flv_ffmpeg_reads_silently_with_every_frame(
    source: Path, tmp_path: Path
) -> None:
    items, encoded = encoded_items(source, 1)
    out = adapted(items)
    starts = [i for i in out if isinstance(i, SessionStart)]
    assert len(starts) == 1 and out[0] is starts[0]
    start = starts[0]
    assert start.video is not None and start.audio is not None
    assert (start.video.codec_name, start.video.width, start.video.height) == ("h264", 320, 180)
    assert start.video.frame_rate == Fraction(30)
    assert start.video.extradata  # x264's global header: the SPS/PPS are only there
    assert (start.audio.codec_name, start.audio.sample_rate) == ("aac", 48000)
    assert isinstance(out[-1], SessionEnd)
    video = [i for i in out if isinstance(i, SourcePacket) and i.kind == "video"]
    assert len(video) == encoded == 120
    # Audio interleaved with the video by decode time (the muxer drops none of it).
    packets = [i for i in out if isinstance(i, SourcePacket)]
    audio_ticks = [p.dts for p in packets if p.kind == "audio"]
    assert audio_ticks == sorted(audio_ticks) and len(audio_ticks) > 4 * 46

    path = tmp_path / "rendition.flv"
    muxer = write_flv(out, path)
    assert ffmpeg_warnings(path, strict=True) == ""
    frames = video_frames(path)
    assert len(frames) == encoded
    assert frames[0] < 0.1 and frames[-1] == pytest.approx(4.0 - 1 / 30, abs=0.1)
    assert muxer.skipped <= 2  # at most the audio before the first picture


def test_a_second_publisher_session_is_a_new_session_on_one_timeline(
    source: Path, tmp_path: Path
) -> None:
    items, encoded = encoded_items(source, 2)
    assert any(i.kind == "discontinuity" and i.rendition == TOP for i in items)
    out = adapted(items)
    starts = [i for i in out if isinstance(i, SessionStart)]
    assert [s.session for s in starts] == [0, 1]
    video = [i for i in out if isinstance(i, SourcePacket) and i.kind == "video"]
    # Each session starts at a keyframe; nothing of the first one comes after it.
    for start in starts:
        first = next(p for p in video if p.session == start.session)
        assert first.keyframe
    assert len(video) == encoded == 240

    path = tmp_path / "two.flv"
    write_flv(out, path)
    assert ffmpeg_warnings(path, strict=True) == ""
    frames = video_frames(path)
    assert len(frames) == encoded
    steps = [b - a for a, b in pairwise(frames)]
    # Continuous: the second session follows the first, at most its B-frame delay
    # (its first decode time continues the timeline) apart.
    assert max(steps) < 6 / 30
    assert sum(1 for step in steps if step > 1.5 / 30) == 1


def test_nothing_before_the_ladder_names_its_top_rendition(source: Path) -> None:
    items, _ = encoded_items(source, 1)
    assert adapted(items, None) == []
    other = adapted(items, "144p")
    start = next(i for i in other if isinstance(i, SessionStart))
    assert start.video is not None and (start.video.width, start.video.height) == (256, 144)


def test_what_flv_cannot_carry() -> None:
    def start(video: str, audio: str) -> SessionStart:
        return SessionStart(
            0,
            VideoParams(video, 320, 180, Fraction(30), Fraction(1, 1000)),
            AudioParams(audio, 48000, 2, Fraction(1, 1000)),
        )

    assert unsupported(start("h264", "aac")) is None
    assert unsupported(start("hevc", "aac")) == "hevc"
    assert unsupported(start("h264", "opus")) == "audio opus"
    assert unsupported(SessionStart(0, None, None)) is None
