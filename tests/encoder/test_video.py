"""A rendition's encoder settings and its bounded hand-off."""

from __future__ import annotations

import re
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from encoder.codecs import H264_NAL_IDR, annexb_nal_units
from encoder.encoded import encoded_broadcast, with_hls_writer
from encoder.host import EncoderHost, EncoderTuning
from encoder.ladder import plan_ladder
from encoder.scaling import Pictures
from encoder.templates import get_template
from encoder.video import END, Handoff, RenditionWorker, VideoItem, x264_options
from media.segments import AudioPacket, Segment


def encode_frames(options: dict[str, str], keyframes: set[int], count: int) -> list[av.Packet]:
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height = 640, 360
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, 90_000)
    context.framerate = Fraction(30)
    context.bit_rate = 800_000
    context.options = options
    packets: list[av.Packet] = []
    rng = np.random.default_rng(7)
    for n in range(count):
        frame = av.VideoFrame.from_ndarray(
            rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        frame.pts = n * 3000
        frame.time_base = Fraction(1, 90_000)
        frame.pict_type = PictureType.I if n in keyframes else PictureType.NONE
        packets.extend(context.encode(frame))
    packets.extend(context.encode(None))
    return packets


def test_x264_applies_the_rendition_settings() -> None:
    plan = plan_ladder(get_template(1), 640, 360)[0]
    options = x264_options(plan, keyint_frames=60, threads=1)
    packets = encode_frames(options, {0}, 3)
    # x264 writes its settings into an SEI of the first packet.
    settings = re.search(rb"options: ([^\x00]+)", bytes(packets[0]))
    assert settings is not None
    text = settings.group(1).decode()
    for expected in (
        "keyint=120",
        "scenecut=0",
        "open_gop=0",
        "vbv_maxrate=880",
        "vbv_bufsize=1600",
        "bframes=3",
        "threads=1",
    ):
        assert re.search(rf"(^| ){expected}( |$)", text), (expected, text)


def test_forced_keyframes_are_idr_exactly_where_asked() -> None:
    plan = plan_ladder(get_template(2), 640, 360)[0]
    keyframes = {0, 45, 77}
    packets = encode_frames(x264_options(plan, keyint_frames=60, threads=1), keyframes, 100)
    key_pts = sorted(p.pts for p in packets if p.is_keyframe and p.pts is not None)
    assert key_pts == [n * 3000 for n in sorted(keyframes)]
    for packet in packets:
        idr = any(n[0] & 0x1F == H264_NAL_IDR for n in annexb_nal_units(bytes(packet)))
        assert idr == packet.is_keyframe  # IDR: closed GOPs, no open-GOP I-frames


def test_handoff_is_bounded_and_never_refuses_the_end() -> None:
    handoff = Handoff(max_frames=2, max_audio=1)
    frame = av.VideoFrame(16, 16, "yuv420p")
    item = VideoItem(Pictures(frame, {}), keyframe=False, discontinuity=False)
    assert handoff.put_frame(item, None)
    assert handoff.put_frame(item, None)
    started = time.monotonic()
    assert not handoff.put_frame(item, started + 0.05)  # full: waits, then refuses
    assert time.monotonic() - started >= 0.04
    audio = AudioPacket(b"x", 0, 0, 1024, Fraction(1, 48000))
    assert handoff.put_audio(audio)
    assert not handoff.put_audio(audio)
    handoff.put_end()
    assert handoff.get() is item and handoff.frames == 1
    # A consumer making room lets a waiting producer in.
    threading.Timer(0.05, handoff.get).start()
    assert handoff.put_frame(item, time.monotonic() + 5)


def test_handoff_abort_wakes_the_consumer() -> None:
    handoff = Handoff(max_frames=1, max_audio=1)
    got: list[object] = []
    consumer = threading.Thread(target=lambda: got.append(handoff.get()))
    consumer.start()
    time.sleep(0.02)
    handoff.abort()
    consumer.join(5)
    assert got == [END]
    item = VideoItem(Pictures(av.VideoFrame(16, 16, "yuv420p"), {}), False, False)
    assert not handoff.put_frame(item, None)


def run_paced_worker(
    tuning: EncoderTuning, frames: int
) -> tuple[RenditionWorker, list[Segment], list[int]]:
    """A 360p worker fed one frame at a time, each taken before the next is offered
    (a live source the encoder keeps up with), keyframes every 30 frames (1 s
    segments). Returns the worker, its segments and, per segment, how many frames had been
    offered when it came out."""
    offered = 0
    emitted_at: list[int] = []
    segments: list[Segment] = []

    def emit(segment: Segment) -> None:
        segments.append(segment)
        emitted_at.append(offered)

    track = encoded_broadcast("paced")
    host, hls = with_hls_writer(
        EncoderHost(
            label="paced",
            tuning=tuning,
            start_sink=lambda variants: None,
            emit_segment=emit,
            event=lambda status, message, rendition: None,
            fail=lambda exc: None,
            abort=threading.Event(),
        ),
        track,
    )
    hls.start()
    plan = plan_ladder(get_template(2), 640, 360)[0]
    worker = RenditionWorker(
        plan,
        host,
        frame_rate=Fraction(30),
        keyint_frames=30,
        segment_seconds=1,
        audio_template=None,
    )
    worker.start()
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    for n in range(frames):
        frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * n, axis=1), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = n * 3000
        frame.time_base = Fraction(1, 90_000)
        offered += 1
        keyframe = n % 30 == 0
        worker.offer_video(
            frame,
            keyframe,
            False,
            time.monotonic() + 5,
            drain=keyframe and tuning.drain_at_keyframes,
        )
        deadline = time.monotonic() + 10
        while (worker.queued_frames or not hls.caught_up) and time.monotonic() < deadline:
            time.sleep(0.001)
    worker.end_input()
    assert worker.join(30)
    track.close()
    assert hls.join(30)
    worker.close()
    return worker, segments, emitted_at


def test_segment_is_out_one_frame_after_its_end_when_keeping_up(tmp_path: Path) -> None:
    worker, segments, emitted_at = run_paced_worker(EncoderTuning(), 100)
    assert [s.sequence for s in segments] == [0, 1, 2, 3]
    # Segment k ends at frame 30(k+1): it is out by the time the frame after that
    # boundary frame is offered, not x264's lookahead (10+ frames) later.
    for k, count in enumerate(emitted_at[:-1]):
        assert count <= 30 * (k + 1) + 2, (k, emitted_at)
    assert worker.drains == 3
    # Encoders reopened at each boundary: the rendition still plays as one stream.
    data = b"".join(s.data for s in segments)
    path = tmp_path / "all.ts"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    dts = [p.dts for p in packets]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)
    assert len(frames) == 100
    keyframes = [n for n, f in enumerate(frames) if f.key_frame]
    assert keyframes == [0, 30, 60, 90]
    for segment in segments:
        assert segment.duration_seconds == pytest.approx(1.0 if segment.sequence < 3 else 10 / 30)


def test_without_drain_a_segment_waits_for_the_lookahead() -> None:
    _, _, emitted_at = run_paced_worker(EncoderTuning(drain_at_keyframes=False), 70)
    assert all(count >= 30 * (k + 1) + 8 for k, count in enumerate(emitted_at[:-1])), emitted_at
