"""The frame rate players read: the SPS VUI timing and the variant's FRAME-RATE.

x264 writes the VUI from the encoder's time base (1/90000) unless told the stream is
constant-rate: GStreamer then announced `framerate=90000/1`. A variable-rate source
keeps its own timestamps, strictly increasing.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from encoder.live_encoder import LiveEncoder
from encoder.templates import get_template
from ingest.media import MediaQueue, nominal_frame_rate
from tests.support.fakes import CollectingSink
from tests.support.media import feed

# dropping every 7th frame makes the source's frame intervals vary
VFR_FILTER = "select='not(eq(mod(n\\,7)\\,3))'"


def source(path: Path, rate: str, vfr: bool) -> Path:
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={rate}",
        "-f", "lavfi", "-i", "sine=sample_rate=48000",
        "-t", "4.5",
        *(["-vf", VFR_FILTER, "-fps_mode", "vfr"] if vfr else []),
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-f", "flv", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=60)
    return path


def vui_rate(segment: Path) -> Fraction:
    """time_scale / (2 * num_units_in_tick), as `trace_headers` prints the SPS."""
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(segment), "-c", "copy",
         "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    fields = dict(re.findall(r"\s(num_units_in_tick|time_scale)\s+[01]+ = (\d+)", done.stderr))
    return Fraction(int(fields["time_scale"]), 2 * int(fields["num_units_in_tick"]))


def video_pts(segment: Path) -> list[int]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts",
         "-of", "csv=p=0", str(segment)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return [int(line.split(",")[0]) for line in done.stdout.split()]


@pytest.mark.parametrize(
    ("rate", "vfr", "expected"),
    [
        ("30", False, Fraction(30)),
        ("30000/1001", False, Fraction(30000, 1001)),
        ("25", False, Fraction(25)),
        ("30", True, Fraction(30)),  # the rate the publisher declares
    ],
)
def test_sps_states_the_real_frame_rate(
    tmp_path: Path, rate: str, vfr: bool, expected: Fraction
) -> None:
    queue = MediaQueue(120)
    sink = CollectingSink()
    encoder = LiveEncoder(get_template(2), queue, sink, label="rate")
    encoder.start()
    sent = feed(source(tmp_path / "source.flv", rate, vfr), queue)
    queue.close()
    encoder.stop()
    assert sent > 0
    variant = sink.variants[0]
    assert variant.frame_rate == pytest.approx(float(expected))
    all_pts: list[int] = []
    for segment in sink.by_rendition()[variant.name]:
        path = tmp_path / f"seg{segment.sequence}.ts"
        path.write_bytes(segment.data)
        assert vui_rate(path) == expected, segment.sequence
        all_pts += sorted(video_pts(path))
    # Timestamps pass through: strictly increasing, no two frames at one instant.
    assert all(b > a for a, b in itertools.pairwise(all_pts))
    if vfr:
        steps = {b - a for a, b in itertools.pairwise(all_pts)}
        assert max(steps) > 1.5 * min(steps)  # the source's own irregular intervals


@pytest.mark.parametrize(
    ("declared", "nominal"),
    [
        (Fraction(989, 33), Fraction(30000, 1001)),  # FLV's 29.97 read back
        (Fraction(2997, 100), Fraction(30000, 1001)),
        (Fraction(23976, 1000), Fraction(24000, 1001)),
        (Fraction(30), Fraction(30)),
        (Fraction(2999, 100), Fraction(2999, 100)),  # 0.03 % from 30: a rate of its own
        (Fraction(12), Fraction(12)),
        (Fraction(0), None),
        (None, None),
    ],
)
def test_declared_rates_snap_to_the_rate_they_stand_for(
    declared: Fraction | None, nominal: Fraction | None
) -> None:
    assert nominal_frame_rate(declared) == nominal
