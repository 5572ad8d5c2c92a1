"""restream.slate: a still picture and silence, decoded back with PyAV."""

from __future__ import annotations

import itertools
import subprocess
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from ingest.media import SourcePacket
from media.clock import TICKS_PER_SECOND
from restream.flv import avcc_record_parameter_sets
from restream.slate import Slate, picture_from_keyframe

WIDTH, HEIGHT = 320, 180
RED = ("-i", "color=c=red:s=64x48", "-frames:v", "1")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slate") / "src.flv"
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate=30", "-t", "0.5"),
            *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)),
        ],
        check=True,
        timeout=60,
    )
    return path


def first_keyframe(path: Path) -> tuple[bytes, bytes, np.ndarray]:
    """(extradata, keyframe packet, its picture as PyAV decodes it: yuv420p planes)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        for packet in container.demux(stream):
            if packet.is_keyframe:
                frames = packet.decode()
                frames += stream.codec_context.decode(None)
                return extradata, bytes(packet), frames[0].to_ndarray()
    raise AssertionError("no keyframe")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255**2 / error)


def decode(packets: list[SourcePacket], kind: str, extradata: bytes | None = None) -> list[Any]:
    codec = "h264" if kind == "video" else "aac"
    context: Any = av.CodecContext.create(codec, "r")
    if extradata:
        context.extradata = extradata
    frames = []
    for packet in packets:
        if packet.kind == kind:
            frames += context.decode(av.Packet(packet.data))
    return frames + context.decode(None)


def test_the_picture_of_a_keyframe_avcc_or_annexb(source: Path) -> None:
    extradata, keyframe, expected = first_keyframe(source)
    picture = picture_from_keyframe("h264", extradata, keyframe)
    assert picture is not None and (picture.width, picture.height) == (WIDTH, HEIGHT)
    assert np.array_equal(picture.to_ndarray(), expected)
    # the same keyframe as MPEG-TS carries it: start codes, SPS/PPS in band
    _, sps, pps = avcc_record_parameter_sets(extradata)
    annexb = b"".join(b"\x00\x00\x00\x01" + nal for nal in sps + pps)
    pos = 0
    while pos < len(keyframe):
        size = int.from_bytes(keyframe[pos : pos + 4], "big")
        annexb += b"\x00\x00\x00\x01" + keyframe[pos + 4 : pos + 4 + size]
        pos += 4 + size
    picture = picture_from_keyframe("h264", None, annexb)
    assert picture is not None and np.array_equal(picture.to_ndarray(), expected)


def test_what_cannot_be_decoded_gives_no_picture(source: Path) -> None:
    _, keyframe, _ = first_keyframe(source)
    assert picture_from_keyframe("h264", None, keyframe) is None  # AVCC without its avcC
    assert picture_from_keyframe("h264", None, b"\x00\x00\x00\x01\x65garbage") is None
    assert picture_from_keyframe("hevc", None, keyframe) is None


def test_a_slate_of_the_last_picture_with_silence_covers_5_s(source: Path) -> None:
    extradata, keyframe, expected = first_keyframe(source)
    picture = picture_from_keyframe("h264", extradata, keyframe)
    slate = Slate(
        width=WIDTH,
        height=HEIGHT,
        frame_rate=Fraction(30),
        sample_rate=48000,
        channels=2,
        picture=picture,
    )
    packets = slate.packets(3, 90_000, 5.0)
    assert {p.session for p in packets} == {3}
    video = [p for p in packets if p.kind == "video"]
    audio = [p for p in packets if p.kind == "audio"]
    # whole GOPs, keyframe first, no B-frames, 30 fps from the start instant
    assert len(video) == 150 and video[0].keyframe and sum(p.keyframe for p in video) == 5
    assert (
        [p.pts for p in video] == [p.dts for p in video] == [90_000 + i * 3000 for i in range(150)]
    )
    assert slate.span_ticks(5.0) == 5 * TICKS_PER_SECOND
    frames = decode(packets, "video")  # Annex B, SPS/PPS in band: no extradata needed
    assert len(frames) == 150
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
    assert psnr(frames[0].to_ndarray(), expected) > 30
    assert psnr(frames[-1].to_ndarray(), expected) > 30
    # silence at the source's rate and channels, covering the same 5 s
    assert audio[0].pts is not None and 90_000 <= audio[0].pts < 90_000 + 1920  # on its grid
    assert all(p.keyframe for p in audio)
    steps = {b.pts - a.pts for a, b in itertools.pairwise(audio) if a.pts and b.pts}
    assert steps == {1920}
    assert audio[-1].pts is not None and audio[-1].pts + 1920 >= 90_000 + 5 * TICKS_PER_SECOND
    sound = decode(packets, "audio", slate.extradata())
    assert {(f.sample_rate, f.layout.nb_channels) for f in sound} == {(48000, 2)}
    samples = np.concatenate([f.to_ndarray() for f in sound], axis=1)
    assert samples.shape[1] >= 5 * 48000 and np.abs(samples).max() < 1e-4
    start = slate.session_start(3)
    assert start.video is not None and (start.video.width, start.video.height) == (WIDTH, HEIGHT)
    assert start.audio is not None and (start.audio.sample_rate, start.audio.channels) == (48000, 2)


def test_consecutive_calls_tile_exactly() -> None:
    slate = Slate(
        width=64, height=36, frame_rate=Fraction(30000, 1001), sample_rate=44100, channels=1
    )
    assert slate.gop_frames == 30
    first = slate.packets(0, 0, 1.0)
    second = slate.packets(0, slate.span_ticks(1.0), 1.0)
    for kind, step in (("video", 3003), ("audio", None)):
        ticks = [p.pts or 0 for p in first + second if p.kind == kind]
        assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
        if step:
            assert {b - a for a, b in itertools.pairwise(ticks)} == {step}
        else:
            gaps = {b - a for a, b in itertools.pairwise(ticks)}
            assert gaps <= {2089, 2090}  # 1024 samples at 44.1 kHz, to the tick
    assert slate.extradata() is not None


def test_without_a_picture_the_slate_is_black_and_may_be_silent() -> None:
    slate = Slate(width=WIDTH, height=HEIGHT, frame_rate=None)
    assert slate.frame_rate == 30 and slate.extradata() is None
    assert slate.session_start(0).audio is None
    packets = slate.packets(0, 0, 1.0)
    assert {p.kind for p in packets} == {"video"}
    luma = decode(packets, "video")[0].to_ndarray()[:HEIGHT]
    assert abs(float(luma.mean()) - 16) < 2


def test_a_configured_image_scaled_to_the_size(tmp_path: Path) -> None:
    image = tmp_path / "slate.png"
    subprocess.run(
        [*("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi"), *RED, str(image)],
        check=True,
        timeout=60,
    )
    slate = Slate(width=WIDTH, height=HEIGHT, image=image)
    frame = decode(slate.packets(0, 0, 1.0), "video")[0]
    assert (frame.width, frame.height) == (WIDTH, HEIGHT)
    red = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 50 and red[2] < 50


def test_odd_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        Slate(width=321, height=180)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1920, 1080)])
def test_building_a_slate_costs_well_under_a_second(width: int, height: int) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")  # a hard picture to code
    began = time.process_time()
    Slate(width=width, height=height, sample_rate=48000, channels=2, picture=picture)
    assert time.process_time() - began < 1.0
