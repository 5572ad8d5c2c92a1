"""Density: how many real-time 720p30 template-2 lives one host sustains with no dropped frame.

onair: `onair run` (embedded SeaweedFS); N ffmpeg publishers copy a pre-encoded 720p30
source over RTMP in real time (`-re -c copy`: they spend almost no CPU) to N template-2
jobs. A step is sustained when every job decoded and encoded every frame (no drop in
ingest or encoder) and its 720p output lasts as long as the source.
ffmpeg CLI: N processes, each `-re` reading the same source into the same ladder as
HLS; a step is sustained when every process kept real time: it ends within 0.75 s of
the source's duration (start-up and flush; a process that falls behind real time ends late).
N grows from 1 until a step fails. Prints the highest sustained N of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import m3u8

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import Onair, source_720p
from throughput import ffmpeg_ladder_command

from encoder.ladder import plan_ladder
from encoder.templates import get_template


def onair_step(
    service: Onair, source: Path, lives: int, seconds: int, step: int
) -> tuple[bool, str]:
    bucket = "bench-density"
    jobs = [service.create_online_job(2, bucket, f"s{step}-j{i}") for i in range(lives)]
    publishers = [
        subprocess.Popen(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-i",
                str(source),
                "-c",
                "copy",
                "-f",
                "flv",
                service.rtmp_url(job["key"]),
            ],
        )
        for job in jobs
    ]
    codes = [p.wait(seconds * 3 + 30) for p in publishers]
    time.sleep(1.0)
    notes = []
    ok = all(code == 0 for code in codes)
    for index, job in enumerate(jobs):
        stats = service.stats(job)
        dropped = int(stats.get("droppedFrames", 0)) + sum(
            int(o.get("droppedFrames", 0)) for o in stats.get("outputs", [])
        )
        service.offline(job)
        key = f"bench/s{step}-j{index}/720p/event.m3u8"
        text = service.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        duration = sum(s.duration for s in m3u8.loads(text).segments)
        notes.append(f"dropped {dropped}, {duration:.1f} s out")
        if dropped or duration < seconds - 2.5:
            ok = False
    return ok, "; ".join(notes)


def ffmpeg_step(source: Path, lives: int, seconds: int, work: Path) -> tuple[bool, str]:
    template = get_template(2)
    plans = plan_ladder(template, 1280, 720)
    commands = []
    for i in range(lives):
        out_dir = work / f"ff-{lives}-{i}"
        out_dir.mkdir()
        command = ffmpeg_ladder_command(source, template, plans, out_dir)
        command.insert(command.index("-i"), "-re")
        commands.append(command)
    started = time.monotonic()
    processes = [subprocess.Popen(c) for c in commands]
    walls = []
    for process in processes:
        process.wait()
        walls.append(time.monotonic() - started)
    ok = all(p.returncode == 0 for p in processes) and max(walls) <= seconds + 0.75
    return ok, ", ".join(f"{w:.1f} s" for w in walls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--max-lives", type=int, default=6)
    args = parser.parse_args()
    source = source_720p(args.seconds)
    best_onair = best_ffmpeg = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Past the admission limit: ONAIR_CAPACITY defaults to what this measures.
        service = Onair(work / "onair", env={"ONAIR_CAPACITY": "100"})
        try:
            for lives in range(1, args.max_lives + 1):
                ok, notes = onair_step(service, source, lives, args.seconds, lives)
                print(
                    f"onair  {lives} lives: {'sustained' if ok else 'NOT sustained'} ({notes})",
                    flush=True,
                )
                if not ok:
                    break
                best_onair = lives
        finally:
            service.stop()
        for lives in range(1, args.max_lives + 1):
            ok, notes = ffmpeg_step(source, lives, args.seconds, work)
            print(
                f"ffmpeg {lives} lives: {'sustained' if ok else 'NOT sustained'} (wall {notes})",
                flush=True,
            )
            if not ok:
                break
            best_ffmpeg = lives
    print(
        f"density, real-time 720p30 template-2 lives on this host: onair {best_onair}, "
        f"ffmpeg CLI {best_ffmpeg}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
