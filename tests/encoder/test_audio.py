"""AAC once per job: sample-counted timestamps, resync on gaps, format conversion."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np

from encoder.audio import AacEncoder
from media.segments import AudioPacket


def tone(samples: int, rate: int = 48000, layout: str = "stereo") -> av.AudioFrame:
    channels = 2 if layout == "stereo" else 1
    data = np.sin(np.arange(samples, dtype=np.float32) / 10)[None, :].repeat(channels, 0)
    frame = av.AudioFrame.from_ndarray(data.astype(np.float32), format="fltp", layout=layout)
    frame.sample_rate = rate
    return frame


def feed(
    encoder: AacEncoder,
    starts: list[Fraction],
    samples: int = 960,
    rate: int = 48000,
    layout: str = "stereo",
) -> list[AudioPacket]:
    packets: list[AudioPacket] = []
    for start in starts:
        packets += encoder.encode(tone(samples, rate, layout), start)
    return packets


def pts_seconds(packets: list[AudioPacket]) -> list[Fraction]:
    return [p.pts * p.time_base for p in packets]


def test_contiguous_input_gives_contiguous_1024_sample_packets() -> None:
    encoder = AacEncoder(48000, 2, 128_000)
    encoder.start_session()
    packets = feed(encoder, [Fraction(n * 960, 48000) for n in range(50)])
    packets += encoder.flush()
    assert encoder.extradata and encoder.frame_samples == 1024
    assert all(p.duration == 1024 for p in packets)
    steps = {b.pts - a.pts for a, b in itertools.pairwise(packets)}
    assert steps == {1024}
    assert packets[0].pts == -1024  # encoder priming, before the first sample
    assert len(packets) == 50 * 960 // 1024 + 1
    assert encoder.end_seconds == Fraction(46 * 1024, 48000)


def test_small_jitter_is_ignored_and_a_gap_resyncs() -> None:
    encoder = AacEncoder(48000, 2, 128_000)
    encoder.start_session()
    jitter = Fraction(1, 1000)  # FLV timestamps are whole milliseconds
    starts = [Fraction(n * 960, 48000) + (jitter if n % 2 else 0) for n in range(20)]
    packets = feed(encoder, starts)
    assert encoder.gaps == 0
    # 500 ms lost upstream: the next packets carry the new position, not the old count.
    gap_start = Fraction(20 * 960, 48000) + Fraction(1, 2)
    after = feed(encoder, [gap_start + Fraction(n * 960, 48000) for n in range(20)])
    assert encoder.gaps == 1
    times = pts_seconds(packets + after)
    jump = max(b - a for a, b in itertools.pairwise(times))
    assert abs(jump - Fraction(1, 2)) < Fraction(1024, 48000) * 2
    assert times == sorted(times)


def test_other_sessions_are_converted_to_the_job_format() -> None:
    encoder = AacEncoder(48000, 2, 128_000)
    encoder.start_session()
    first = feed(encoder, [Fraction(n * 960, 48000) for n in range(10)])
    encoder.end_session()  # the partial frame is dropped, nothing is flushed
    encoder.start_session()  # a reconnect at 44.1 kHz mono
    at = encoder.end_seconds
    second = feed(
        encoder,
        [at + Fraction(n * 1024, 44100) for n in range(40)],
        samples=1024,
        rate=44100,
        layout="mono",
    )
    packets = first + second + encoder.flush()
    times = pts_seconds(packets)
    assert times == sorted(times) and len(set(times)) == len(times)
    # 9 whole frames from the first session, then 40 x 1024 samples at 44.1 kHz are
    # 44582 samples at 48 kHz: 43 more whole frames; plus the priming packet.
    assert len(packets) == 1 + 9 + 43
    assert times[-1] == at + Fraction(42 * 1024, 48000)
    assert {p.time_base for p in packets} == {Fraction(1, 48000)}
