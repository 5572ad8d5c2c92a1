"""Quality A/B of the low-latency drain: one 720p rendition, drain on vs off.

A 15 s 720p30 source (bench/out, shared with the latency bench) is encoded by one
template-2 720p RenditionWorker fed one frame at a time (a live pace), once with the
x264 drain at every segment boundary and once without; ffmpeg's psnr filter compares
each output with the source. Prints bytes and PSNR of each. Nothing is asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import source_720p

from encoder.encoded import encoded_broadcast, with_hls_writer
from encoder.host import EncoderHost, EncoderTuning
from encoder.ladder import plan_ladder
from encoder.templates import get_template
from encoder.video import RenditionWorker
from media.segments import Segment


def encode(source: Path, drain: bool, out: Path) -> int:
    """The 720p rendition of `source` into `out` (TS); returns the drains made."""
    segments: list[Segment] = []
    track = encoded_broadcast("quality")
    host, hls = with_hls_writer(
        EncoderHost(
            label="quality",
            tuning=EncoderTuning(drain_at_keyframes=drain),
            start_sink=lambda variants: None,
            emit_segment=segments.append,
            event=lambda status, message, rendition: None,
            fail=lambda exc: None,
            abort=threading.Event(),
        ),
        track,
    )
    hls.start()
    plan = plan_ladder(get_template(2), 1280, 720)[0]
    worker = RenditionWorker(
        plan,
        host,
        frame_rate=Fraction(30),
        keyint_frames=60,
        segment_seconds=2,
        audio_template=None,
    )
    worker.start()
    with av.open(str(source)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            frame.pts = n * 3000
            frame.time_base = Fraction(1, 90_000)
            keyframe = n % 60 == 0
            worker.offer_video(
                frame, keyframe, False, time.monotonic() + 5, drain=drain and keyframe
            )
            while worker.queued_frames:
                time.sleep(0.001)
    worker.end_input()
    worker.join(60)
    track.close()
    hls.join(60)
    worker.close()
    out.write_bytes(b"".join(s.data for s in sorted(segments, key=lambda s: s.sequence)))
    return worker.drains


def psnr(encoded: Path, source: Path) -> str:
    graph = "[0:v]setpts=PTS-STARTPTS[a];[1:v]setpts=PTS-STARTPTS[b];[a][b]psnr"
    inputs = ["-i", str(encoded), "-i", str(source)]
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", *inputs, "-lavfi", graph, "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.findall(r"PSNR (.*)", done.stderr)
    return found[-1] if found else "?"


def main() -> int:
    source = source_720p(15)
    with tempfile.TemporaryDirectory() as tmp:
        for drain in (True, False):
            out = Path(tmp) / f"drain-{drain}.ts"
            drains = encode(source, drain, out)
            label = "drain   " if drain else "no drain"
            print(f"{label}: {drains} drains, {out.stat().st_size} bytes, {psnr(out, source)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
