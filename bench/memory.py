"""Memory per live, per template: onair's RSS with 1 and 2 real-time lives, against the
ffmpeg CLI encoding the same ladder from the same source in real time.

onair runs as `onair run` (embedded SeaweedFS, its own process, not counted); each
live is an ffmpeg publisher copying a cached source in real time (`-re -c copy`).
The onair process's RSS is sampled every 0.2 s: the figure per live is (peak - RSS
before the lives) / lives. ffmpeg's figure is the peak RSS (wait4) of one ffmpeg
process doing the whole live ladder to local disk. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import Onair, source_720p
from throughput import ffmpeg_ladder_command, run_measured, source_file

from encoder.ladder import plan_ladder
from encoder.templates import get_template

CASES = [  # template, the source it is fed, (width, height)
    (2, "720p", (1280, 720)),
    (1, "1080p", (1920, 1080)),
    (3, "720p", (1280, 720)),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def onair_lives(source: Path, template: int, lives: int, seconds: int, work: Path) -> float:
    """MB of RSS per live, `lives` at once, on a fresh service."""
    # Memory, not capacity, is measured here: admit every live.
    service = Onair(work / f"onair-{template}-{lives}", env={"ONAIR_CAPACITY": "100"})
    try:
        jobs = [service.create_online_job(template, "bench-memory", f"m{i}") for i in range(lives)]
        time.sleep(1.0)
        base = rss_mb(service.process.pid)
        peak = [base]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(service.process.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        publish = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                   "-t", str(seconds), "-i", str(source), "-c", "copy", "-f", "flv"]  # fmt: skip
        publishers = [subprocess.Popen([*publish, service.rtmp_url(job["key"])]) for job in jobs]
        for publisher in publishers:
            publisher.wait(seconds * 3 + 30)
        done.set()
        sampler.join()
        for job in jobs:
            service.offline(job)
        return (peak[0] - base) / lives
    finally:
        service.stop()


def ffmpeg_live(source: Path, template_id: int, size: tuple[int, int], work: Path) -> float:
    template = get_template(template_id)
    out = work / f"ffmpeg-{template_id}"
    out.mkdir()
    if template.passthrough:
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-re", "-i",
                   str(source), "-c", "copy", "-f", "hls", "-hls_time", "2",
                   "-hls_playlist_type", "vod", str(out / "index.m3u8")]  # fmt: skip
    else:
        command = ffmpeg_ladder_command(source, template, plan_ladder(template, *size), out)
        command.insert(command.index("-i"), "-re")
    _, rss, status, _ = run_measured(command)
    return float(rss) if status == 0 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    sources = {"720p": source_720p(args.seconds), "1080p": source_file(args.seconds)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for template, name, size in CASES:
            one = onair_lives(sources[name], template, 1, args.seconds, work)
            two = onair_lives(sources[name], template, 2, args.seconds, work)
            ffmpeg = ffmpeg_live(sources[name], template, size, work)
            rows.append((template, name, one, two, ffmpeg))
            print(
                f"template {template} fed {name}: onair {one:.0f} MB per live alone, "
                f"{two:.0f} MB per live with two; ffmpeg CLI {ffmpeg:.0f} MB "
                f"(ratio {one / ffmpeg:.2f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
