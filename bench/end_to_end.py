"""End to end: a 1080p file published over RTMP as fast as it goes, until the whole ladder
is in SeaweedFS, against the ffmpeg CLI doing the same ladder from the file; and the limit,
the CPU x264 alone spends on the same already-scaled frames.

    .venv/bin/python bench/end_to_end.py [--seconds 20] [--template 1] [--repeat 1]

(1) End to end, in the same run:
  onair: `onair run` (embedded SeaweedFS) with one job of the template, online; the
      ffmpeg CLI publishes the cached source (bench/throughput.py) with `-c copy`,
      no `-re`. A publisher leaving does not end a live (it waits for a reconnect, and
      the last, partial segment stays in the encoder), so once the encoder is idle (no
      frame encoded for QUIET_SECONDS, polled through the stats API) the bench puts the
      job offline; going offline earlier would cut a decoder still busy with buffered
      input. The end is the user-visible one, read from the bucket: every rendition's
      live and event playlists end with EXT-X-ENDLIST (so its last segment is listed,
      hence uploaded) and the master points to the event playlists. The wall time runs
      from the publisher's start to that end, less the bench's own idle wait (from the
      first poll that saw the last frame count to going offline); the raw figure is
      printed too. CPU: the service process's utime+stime over the same span
      (/proc/PID/stat; SeaweedFS, its child, is printed apart and not counted); peak
      RSS: its VmHWM. Then every rendition's segments are read back from the bucket and
      their video frames counted against the source's.
  ffmpeg: `throughput.ffmpeg_ladder_command` from the file to local disk (wall, peak
      RSS and CPU from wait4).
(2) The limit: per rendition, the source scaled to raw yuv420p in a temporary file
  (not timed, one at a time: 20 s of 1080p is 1.9 GB), then `ffmpeg -f rawvideo ...
  -c:v libx264 <the ladder command's settings> -f null -`; its user+sys CPU. The sum
  is "x264 alone", printed beside onair's CPU as the overhead ratio.

Targets (printed, not asserted): wall onair/ffmpeg <= 0.95, CPU onair/x264 <= 1.10.
A live drops (never waits) when its input comes faster than it encodes: when the
bucket lacks frames, the ratios are printed as not comparable.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import m3u8

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import Onair
from throughput import FPS, HEIGHT, WIDTH, ffmpeg_ladder_command, run_measured, source_file

from encoder.ladder import RenditionPlan, plan_ladder
from encoder.templates import JobTemplate, get_template
from packager import layout

BUCKET = "bench-e2e"
QUIET_SECONDS = 1.0  # no frame encoded for this long: the encoder has all it will get
POLL_SECONDS = 0.1  # stats API while encoding
BUCKET_POLL_SECONDS = 0.05  # playlists after going offline
WALL_TARGET, CPU_TARGET = 0.95, 1.10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- /proc -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Direct children of `pid` (SeaweedFS, for the service)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def peak_rss_mb(pid: int) -> int:
    """VmHWM: the peak RSS of a process that is still running."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


# -- (1) end to end --------------------------------------------------------------------


@dataclass
class OnairRun:
    """What one end-to-end onair run measured."""

    wall: float = 0.0  # publisher start -> ENDLIST everywhere, less the bench's idle wait
    raw_wall: float = 0.0
    publisher: float = 0.0  # when the publisher exited
    idle_seen: float = 0.0  # first poll that saw the final frame count
    offline_at: float = 0.0
    cpu: float = 0.0
    s3_cpu: float = 0.0
    rss_mb: int = 0
    s3_rss_mb: int = 0
    publisher_status: int = 0
    ended: bool = False  # every playlist ended before the deadline
    stats: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # segs, frames, s
    log_drops: list[str] = field(default_factory=list)


def drain_log(process: subprocess.Popen[str], lines: list[str]) -> None:
    """Keep the service's stdout read (a full pipe would block its logging)."""
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
    except (ValueError, OSError):  # closed by Onair.stop()
        pass


def progress(stats: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    return tuple((o.get("framesEncoded", 0), o.get("segments", 0)) for o in stats["outputs"])


def wait_idle(service: Onair, job: dict[str, Any], timeout: float) -> tuple[float, dict[str, Any]]:
    """(when the last change was first seen, the stats then) once nothing moved for
    QUIET_SECONDS."""
    deadline = time.monotonic() + timeout
    last: tuple[tuple[int, int], ...] = ()
    changed = time.monotonic()
    stats: dict[str, Any] = {"outputs": []}
    while time.monotonic() < deadline:
        stats = service.stats(job)
        now = time.monotonic()
        seen = progress(stats)
        if seen != last or not any(frames for frames, _ in seen):
            last, changed = seen, now
        elif now - changed >= QUIET_SECONDS:
            break
        time.sleep(POLL_SECONDS)
    return changed, stats


def ladder_ended(service: Onair, prefix: str, names: Sequence[str]) -> bool:
    """Every rendition's live and event playlists carry ENDLIST; the master lists the
    event playlists (what a player sees once the live has ended)."""
    keys = [layout.live_playlist_key(prefix, n) for n in names]
    keys += [layout.event_playlist_key(prefix, n) for n in names]
    try:
        for key in keys:
            body = service.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
            if "#EXT-X-ENDLIST" not in body:
                return False
        master = service.s3.get_object(Bucket=BUCKET, Key=layout.master_key(prefix))
        return layout.EVENT_PLAYLIST_NAME in master["Body"].read().decode()
    except service.s3.exceptions.NoSuchKey:
        return False


def count_frames(service: Onair, prefix: str, name: str) -> tuple[int, int, float]:
    """(segments, video frames, seconds) of one rendition's event playlist in the bucket."""
    key = layout.event_playlist_key(prefix, name)
    body = service.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    playlist = m3u8.loads(body)
    folder = key.rsplit("/", 1)[0]
    data = b"".join(
        service.s3.get_object(Bucket=BUCKET, Key=f"{folder}/{s.uri}")["Body"].read()
        for s in playlist.segments
    )
    frames = 0
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        for packet in container.demux(container.streams.video[0]):
            frames += 1 if packet.size else 0
    seconds = sum(float(s.duration or 0) for s in playlist.segments)
    return len(playlist.segments), frames, seconds


def run_onair(
    source: Path, seconds: int, template: JobTemplate, names: Sequence[str], work: Path
) -> OnairRun:
    run = OnairRun()
    service = Onair(work)
    log: list[str] = []
    threading.Thread(target=drain_log, args=(service.process, log), daemon=True).start()
    try:
        pid = service.process.pid
        path = "e2e"
        job = service.create_online_job(template.id, BUCKET, path)
        prefix = layout.object_prefix("bench", path)
        s3_pids = children(pid)
        cpu0 = cpu_seconds(pid)
        s3_cpu0 = sum(cpu_seconds(p) for p in s3_pids)
        publish = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                   "-i", str(source), "-c", "copy", "-f", "flv",
                   service.rtmp_url(job["key"])]  # fmt: skip
        started = time.monotonic()
        run.publisher_status = subprocess.run(publish).returncode
        run.publisher = time.monotonic() - started
        idle, run.stats = wait_idle(service, job, timeout=60 + 10 * seconds)
        run.idle_seen = idle - started
        run.offline_at = time.monotonic() - started
        offline = threading.Thread(target=service.offline, args=(job,), daemon=True)
        offline.start()
        deadline = time.monotonic() + 120
        while not ladder_ended(service, prefix, names) and time.monotonic() < deadline:
            time.sleep(BUCKET_POLL_SECONDS)
        run.ended = time.monotonic() < deadline
        ended = time.monotonic()
        run.cpu = cpu_seconds(pid) - cpu0
        run.s3_cpu = sum(cpu_seconds(p) for p in s3_pids) - s3_cpu0
        run.rss_mb = peak_rss_mb(pid)
        run.s3_rss_mb = sum(peak_rss_mb(p) for p in s3_pids)
        run.raw_wall = ended - started
        run.wall = run.raw_wall - (run.offline_at - run.idle_seen)
        offline.join(60)
        run.frames = {name: count_frames(service, prefix, name) for name in names}
    finally:
        service.stop()
    run.log_drops = [line for line in log if "drop" in line.lower()]
    return run


def summarize_log(lines: Sequence[str]) -> list[str]:
    """One line per kind of message (numbers aside): how often, and the last one."""
    kinds: dict[str, tuple[int, str]] = {}
    for line in lines:
        message = line.split(" ", 2)[-1]  # past the date and time
        kind = re.sub(r"\d+", "N", message)
        kinds[kind] = (kinds.get(kind, (0, ""))[0] + 1, message)
    return [f"{count} x {last}" for count, last in kinds.values()]


def print_onair(run: OnairRun, seconds: int, segment_seconds: float) -> None:
    print(
        f"onair : {run.wall:6.2f} s wall ({run.raw_wall:.2f} s raw: publisher exited at "
        f"{run.publisher:.2f} s (exit {run.publisher_status}), encoder idle at "
        f"{run.idle_seen:.2f} s, offline at {run.offline_at:.2f} s), {run.cpu:6.2f} s CPU, "
        f"{run.rss_mb:5d} MB peak RSS (VmHWM); SeaweedFS apart: {run.s3_cpu:.2f} s CPU, "
        f"{run.s3_rss_mb} MB" + ("" if run.ended else "; NO ENDLIST within 120 s")
    )
    expected_frames = seconds * FPS
    expected_segments = math.ceil(seconds / segment_seconds)
    outputs = {o["name"]: o for o in run.stats.get("outputs", [])}
    for name, (segments, frames, duration) in run.frames.items():
        dropped = outputs.get(name, {}).get("droppedFrames", "?")
        print(
            f"  {name:>6} in the bucket: {segments}/{expected_segments} segments, "
            f"{duration:.2f} s, {frames}/{expected_frames} frames; encoder dropped {dropped}"
        )
    lost = sum(expected_frames - frames for _, frames, _ in run.frames.values())
    print(
        f"  frames dropped: {'none' if lost == 0 else f'{lost} across renditions'}; "
        f"before the ladder (API droppedFrames) {run.stats.get('droppedFrames', '?')}; "
        f"{len(run.log_drops)} drop lines in the service log"
    )
    for line in summarize_log(run.log_drops):
        print(f"    log: {line}")


def encoded_share(run: OnairRun, seconds: int) -> float:
    """The least share of the source's frames any rendition has in the bucket."""
    counts = [frames for _, frames, _ in run.frames.values()]
    return min(counts, default=0) / (seconds * FPS)


def x264_share(per_rendition: dict[str, float], run: OnairRun, seconds: int) -> float:
    """x264-alone CPU scaled, per rendition, to the share of frames `run` has of it."""
    return sum(cpu * run.frames[name][1] / (seconds * FPS) for name, cpu in per_rendition.items())


def run_ffmpeg(
    source: Path, template: JobTemplate, plans: Sequence[RenditionPlan], work: Path
) -> tuple[float, int, int, float]:
    out_dir = work / "ffmpeg"
    out_dir.mkdir()
    wall, rss, status, cpu = run_measured(ffmpeg_ladder_command(source, template, plans, out_dir))
    segments = len(list(out_dir.glob("*.ts")))
    print(
        f"ffmpeg: {wall:6.2f} s wall, {cpu:6.2f} s CPU, {rss:5d} MB peak RSS, "
        f"{segments} segments (exit {status})"
    )
    return wall, rss, status, cpu


# -- (2) x264 alone --------------------------------------------------------------------


def x264_options(template: JobTemplate, plan: RenditionPlan, out_dir: Path) -> list[str]:
    """The video encoder options of the ffmpeg ladder command for this one rendition
    (taken from `ffmpeg_ladder_command` itself, so the two cannot drift)."""
    cmd = ffmpeg_ladder_command(Path("unused"), template, [plan], out_dir)
    start = cmd.index("-c:v:0")
    video = cmd[start : cmd.index("-map", start)]
    gop = cmd.index("-g")
    return video + cmd[gop : cmd.index("-f", gop)]


def x264_alone(
    source: Path, template: JobTemplate, plans: Sequence[RenditionPlan]
) -> dict[str, float]:
    """Per rendition, CPU seconds of x264 encoding it from raw, already-scaled frames."""
    total = 0.0
    per_rendition = {}
    rows = []
    for plan in plans:
        with tempfile.TemporaryDirectory(prefix="onair-e2e-raw-") as tmp:
            raw = Path(tmp) / f"{plan.name}.yuv"
            subprocess.run(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                 "-i", str(source), "-an", "-vf", f"scale={plan.width}:{plan.height}",
                 "-pix_fmt", "yuv420p", "-f", "rawvideo", str(raw)],
                check=True,
            )  # fmt: skip
            encode = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                      "-f", "rawvideo", "-pix_fmt", "yuv420p",
                      "-s", f"{plan.width}x{plan.height}", "-r", str(FPS), "-i", str(raw),
                      *x264_options(template, plan, Path(tmp)), "-f", "null", "-"]  # fmt: skip
            wall, _, status, cpu = run_measured(encode)
        total += cpu
        per_rendition[plan.name] = cpu
        rows.append(
            f"{plan.name} {cpu:.2f} s ({wall:.2f} s wall{'' if status == 0 else ', FAILED'})"
        )
    print(f"x264 alone: {total:6.2f} s CPU = " + ", ".join(rows))
    return per_rendition


def the_rest_alone(source: Path, template: JobTemplate, plans: Sequence[RenditionPlan]) -> float:
    """CPU seconds of the work beside x264 that any ladder does: decode the source once,
    scale it to every rendition (bicubic, each from the source as the ffmpeg CLI does;
    onair scales in a cascade, `encoder/scaling.py`), encode
    the AAC once; the ffmpeg CLI, into `-f null`."""
    ladder = ffmpeg_ladder_command(Path("unused"), template, plans, Path("unused"))
    audio = ladder.index("-c:a")
    outputs = [f"[v{i}]" for i in range(len(plans))]
    graph = [f"[0:v]split={len(plans)}" + "".join(f"[s{i}]" for i in range(len(plans)))]
    for i, plan in enumerate(plans):
        if (plan.width, plan.height) == (WIDTH, HEIGHT):
            graph.append(f"[s{i}]null[v{i}]")
        else:
            graph.append(f"[s{i}]scale={plan.width}:{plan.height}:flags=bicubic[v{i}]")
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(source),
               "-filter_complex", ";".join(graph)]  # fmt: skip
    for label in outputs:
        command += ["-map", label, "-f", "null", "-"]
    command += ["-map", "0:a", *ladder[audio : audio + 4], "-f", "null", "-"]
    _, _, status, cpu = run_measured(command)
    print(
        f"decode + {len(plans)} scalers + AAC alone: {cpu:6.2f} s CPU"
        + ("" if status == 0 else " (FAILED)")
    )
    return cpu


# -- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--template", type=int, default=1)
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate onair and ffmpeg N times (noisy host)"
    )
    args = parser.parse_args(argv)
    template = get_template(args.template)
    if template.passthrough:
        parser.error(f"template {template.id} copies its source: no ladder to compare")
    source = source_file(args.seconds)
    plans = plan_ladder(template, WIDTH, HEIGHT)
    names = [p.name for p in plans]
    print(
        f"source {source.name} ({args.seconds * FPS} frames); template {template.id}: "
        + ", ".join(p.describe() for p in plans)
        + f" + AAC; {os.cpu_count()} cores"
    )
    walls: list[float] = []
    runs: list[tuple[float, float, OnairRun]] = []  # onair CPU, ffmpeg CPU, the run
    for run_index in range(args.repeat):
        if args.repeat > 1:
            print(f"-- run {run_index + 1}/{args.repeat}")
        with tempfile.TemporaryDirectory(prefix="onair-e2e-") as tmp:
            onair = run_onair(source, args.seconds, template, names, Path(tmp) / "onair")
            print_onair(onair, args.seconds, template.segment_seconds)
            ffmpeg_wall, ffmpeg_rss, _, ffmpeg_cpu = run_ffmpeg(source, template, plans, Path(tmp))
        ratio = onair.wall / ffmpeg_wall
        print(
            f"ratio onair/ffmpeg: wall {ratio:.2f} (target <= {WALL_TARGET}; raw "
            f"{onair.raw_wall / ffmpeg_wall:.2f}), CPU {onair.cpu / ffmpeg_cpu:.2f}, "
            f"RSS {onair.rss_mb / max(1, ffmpeg_rss):.2f}"
        )
        share = encoded_share(onair, args.seconds)
        if share < 1:
            print(
                f"  NOT COMPARABLE: onair's bucket has {share:.1%} of the source's frames, "
                "so its wall and CPU cover less work than ffmpeg's"
            )
        walls.append(ratio)
        runs.append((onair.cpu, ffmpeg_cpu, onair))
    if args.repeat > 1:
        print(
            f"median wall ratio onair/ffmpeg over {args.repeat} runs: "
            f"{statistics.median(walls):.2f} (min {min(walls):.2f}, max {max(walls):.2f})"
        )
    per_rendition = x264_alone(source, template, plans)
    x264 = sum(per_rendition.values())
    onair_cpu = statistics.median(c for c, _, _ in runs)
    ffmpeg_cpu = statistics.median(c for _, c, _ in runs)
    share = min(encoded_share(r, args.seconds) for _, _, r in runs)
    print(
        f"overhead over x264 alone: onair {onair_cpu:.2f} s CPU / {x264:.2f} s = "
        f"{onair_cpu / x264:.2f} (target <= {CPU_TARGET}); ffmpeg CLI "
        f"{ffmpeg_cpu / x264:.2f}"
    )
    rest = the_rest_alone(source, template, plans)
    print(
        f"  the work itself (x264 alone + decode, scale, AAC) {x264 + rest:.2f} s: onair "
        f"{onair_cpu / (x264 + rest):.2f} of it, the ffmpeg CLI {ffmpeg_cpu / (x264 + rest):.2f}"
    )
    if share < 1:
        scaled = statistics.median(
            c / x264_share(per_rendition, r, args.seconds) for c, _, r in runs
        )
        print(
            f"  NOT COMPARABLE: onair encoded as little as {share:.1%} of the frames; "
            "against x264 on the frames each rendition has in the bucket (a rough estimate: "
            f"onair also decoded and dropped frames that never got there) {scaled:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
