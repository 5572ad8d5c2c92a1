"""Throughput: onair's LiveEncoder against the ffmpeg CLI doing the same ladder.

    .venv/bin/python bench/throughput.py [--seconds 20] [--template 1]

Generates (once, cached in bench/out/) a 1080p30 testsrc2 + sine source (H.264 +
AAC), then, in the same run:
  (a) onair: a child process decodes the source with PyAV as fast as it can into a
      MediaQueue (waiting whenever the queue is full, so nothing is dropped and both
      sides do the same work), a LiveEncoder encodes the template's ladder, and a sink
      writes the segments to a temporary directory;
  (b) ffmpeg: one process, filter_complex split/scale, libx264 with the same preset,
      bitrates, VBV caps and 2 s closed GOPs, AAC, `-f hls` with var_stream_map.
Prints the wall time of each (process start to exit), the ratio onair/ffmpeg and the
peak RSS of each process (wait4 rusage). The figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from encoder.ladder import RenditionPlan, plan_ladder  # noqa: E402
from encoder.templates import JobTemplate, get_template  # noqa: E402

WIDTH, HEIGHT, FPS = 1920, 1080, 30


def synthetic_source(path: Path, size: str, fps: int, seconds: int, video: Sequence[str]) -> Path:
    """testsrc2 + a 440 Hz sine as H.264 (`video`: its x264 options) + AAC stereo, made
    once and cached at `path` (its suffix chooses the container)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp" + path.suffix)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", *video, "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(tmp)],
        check=True,
    )  # fmt: skip
    tmp.rename(path)
    return path


def source_file(seconds: int) -> Path:
    """The cached source: 1080p30 testsrc2 + 440 Hz sine, H.264 (high) + AAC in MP4."""
    return synthetic_source(
        OUT / f"src_{HEIGHT}p{FPS}_{seconds}s.mp4",
        f"{WIDTH}x{HEIGHT}",
        FPS,
        seconds,
        ["-preset", "veryfast", "-b:v", "8M", "-g", str(2 * FPS)],
    )


def ffmpeg_ladder_command(
    source: Path, template: JobTemplate, plans: Sequence[RenditionPlan], out_dir: Path
) -> list[str]:
    """One ffmpeg process: decode once, split/scale, x264 per rendition, HLS out."""
    n = len(plans)
    chains = [f"[0:v]split={n}" + "".join(f"[v{i}]" for i in range(n))]
    chains += [f"[v{i}]scale={p.width}:{p.height}[o{i}]" for i, p in enumerate(plans)]
    gop = round(template.gop_seconds * FPS)
    audio_k = f"{(template.audio_bitrate_bps or 128000) // 1000}k"
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        "-filter_complex",
        ";".join(chains),
    ]
    for i, p in enumerate(plans):
        cmd += [
            "-map",
            f"[o{i}]",
            f"-c:v:{i}",
            "libx264",
            f"-preset:v:{i}",
            p.preset or "veryfast",
            f"-profile:v:{i}",
            p.profile or "high",
            f"-b:v:{i}",
            str(p.video_bitrate_bps),
            f"-maxrate:v:{i}",
            str(p.maxrate_bps),
            f"-bufsize:v:{i}",
            str(p.bufsize_bits),
        ]
    for _ in plans:
        cmd += ["-map", "a:0"]
    cmd += [
        "-c:a",
        "aac",
        "-b:a",
        audio_k,
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{template.segment_seconds:g})",
        "-f",
        "hls",
        "-hls_time",
        f"{template.segment_seconds:g}",
        "-hls_playlist_type",
        "vod",
        "-hls_segment_filename",
        str(out_dir / "v%v_%05d.ts"),
        "-var_stream_map",
        " ".join(f"v:{i},a:{i}" for i in range(n)),
        str(out_dir / "v%v.m3u8"),
    ]
    return cmd


def run_measured(
    cmd: Sequence[str], stdout: int | IO[str] | None = None
) -> tuple[float, int, int, float]:
    """(wall seconds, peak RSS in MB, exit status, CPU seconds) of one child process."""
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=stdout)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return time.monotonic() - started, usage.ru_maxrss // 1024, process.returncode, cpu


# -- the onair side (runs in a child process) --------------------------------------


class DirectorySink:
    """Writes each segment to a file; counts what it got."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.segments = 0
        self.bytes = 0
        self.duration_seconds = 0.0
        self.codecs: list[str] = []
        self._lock = threading.Lock()

    def start(self, variants: Sequence[object], segment_seconds: float) -> None:
        self.codecs = [getattr(v, "codecs", "") for v in variants]

    def add_segment(self, segment: object) -> None:
        from media.segments import Segment

        assert isinstance(segment, Segment)
        path = self.directory / f"{segment.rendition}_{segment.sequence:05d}.ts"
        path.write_bytes(segment.data)
        with self._lock:
            self.segments += 1
            self.bytes += len(segment.data)
            self.duration_seconds += segment.duration_seconds

    def finish(self, timeout_seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


def run_onair(source: Path, template_id: int, out_dir: Path, drain: bool) -> None:
    import av

    from encoder.host import EncoderTuning
    from encoder.live_encoder import LiveEncoder
    from ingest.media import AudioParams, MediaQueue, SessionEnd, SessionStart, VideoParams

    started = time.monotonic()
    queue = MediaQueue()
    sink = DirectorySink(out_dir)
    encoder = LiveEncoder(
        get_template(template_id),
        queue,
        sink,
        tuning=EncoderTuning(drain_at_keyframes=drain),
        label="bench",
    )
    encoder.start()
    container = av.open(str(source))
    video = container.streams.video[0]
    audio = container.streams.audio[0]
    video.thread_type = "AUTO"
    queue.put(
        SessionStart(
            0,
            VideoParams(
                "h264",
                video.codec_context.width,
                video.codec_context.height,
                video.average_rate,
                video.time_base,
                video,
            ),
            AudioParams(
                "aac",
                audio.codec_context.sample_rate,
                audio.codec_context.channels,
                audio.time_base,
                audio,
            ),
        )
    )
    frames = 0
    for packet in container.demux(video, audio):
        for frame in packet.decode():
            while len(queue) >= queue.max_items:  # bench only: never drop, wait instead
                time.sleep(0.005)  # (1 ms polling cost ~1 s of CPU in GIL churn)
            queue.put(frame)
            frames += 1
    queue.put(SessionEnd(0, "end of file"))
    queue.close()
    decoded = time.monotonic()
    encoder.stop(timeout_seconds=600)
    container.close()
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "decode_done": decoded - started,
                "items": frames,
                "queue_dropped": queue.dropped,
                "segments": sink.segments,
                "bytes": sink.bytes,
                "codecs": sink.codecs,
                "stats": [dataclasses.asdict(row) for row in encoder.stats()],
                "failed": repr(encoder.failed) if encoder.failed else None,
                "drains": encoder.drains,
            }
        )
    )


def _row(name: str, wall: float, cpu: float, rss_mb: int, out_dir: Path, status: int) -> str:
    files = list(out_dir.glob("*.ts"))
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    return (
        f"{name:<6}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, {rss_mb:5d} MB peak RSS, "
        f"{len(files)} segments, {size_mb:.1f} MB (exit {status})"
    )


def compare(
    source: Path,
    template: JobTemplate,
    plans: Sequence[RenditionPlan],
    seconds: int,
    drain: bool = True,
) -> tuple[float, bool]:
    """One onair run then one ffmpeg run; prints both; returns (wall ratio, both ok)."""
    with tempfile.TemporaryDirectory(prefix="onair-bench-") as tmp:
        onair_dir = Path(tmp) / "onair"
        ffmpeg_dir = Path(tmp) / "ffmpeg"
        onair_dir.mkdir()
        ffmpeg_dir.mkdir()
        child = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--template",
            str(template.id),
            "--onair-child",
            str(source),
            str(onair_dir),
        ]
        if not drain:
            child.append("--no-drain")
        report_path = Path(tmp) / "onair.json"
        with report_path.open("w") as report_file:
            onair_wall, onair_rss, onair_status, onair_cpu = run_measured(child, report_file)
        report = json.loads(report_path.read_text() or "{}")
        ffmpeg_wall, ffmpeg_rss, ffmpeg_status, ffmpeg_cpu = run_measured(
            ffmpeg_ladder_command(source, template, plans, ffmpeg_dir)
        )
        print(_row("onair", onair_wall, onair_cpu, onair_rss, onair_dir, onair_status))
        print(_row("ffmpeg", ffmpeg_wall, ffmpeg_cpu, ffmpeg_rss, ffmpeg_dir, ffmpeg_status))
    print(
        f"onair detail: encode {report.get('elapsed', 0):.2f} s in process, decode done at "
        f"{report.get('decode_done', 0):.2f} s, queue dropped {report.get('queue_dropped')}, "
        f"x264 drains {report.get('drains')}, failed {report.get('failed')}"
    )
    for row in report.get("stats", []):
        print(
            f"  {row['name']:>6} {row['width']}x{row['height']} "
            f"{row['bitrate_bps'] / 1e3:7.0f} kb/s {row['fps']:6.2f} fps "
            f"{row['frames_encoded']} frames, {row['dropped_frames']} dropped"
        )
    ratio = onair_wall / ffmpeg_wall
    print(
        f"ratio onair/ffmpeg: wall {ratio:.2f}, RSS {onair_rss / max(1, ffmpeg_rss):.2f}; "
        f"real time: onair {seconds / onair_wall:.2f}x, ffmpeg {seconds / ffmpeg_wall:.2f}x"
    )
    return ratio, onair_status == 0 and ffmpeg_status == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--template", type=int, default=1)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="alternate the two N times (a shared machine is noisy)",
    )
    parser.add_argument(
        "--no-drain",
        action="store_true",
        help="onair without the low-latency x264 drain at segment boundaries (A/B)",
    )
    parser.add_argument(
        "--onair-child", nargs=2, metavar=("SOURCE", "OUT_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.onair_child:
        run_onair(
            Path(args.onair_child[0]),
            args.template,
            Path(args.onair_child[1]),
            drain=not args.no_drain,
        )
        return 0

    source = source_file(args.seconds)
    template = get_template(args.template)
    plans = plan_ladder(template, WIDTH, HEIGHT)
    print(
        f"source {source.name}; template {template.id}: "
        + ", ".join(p.describe() for p in plans)
        + f" + AAC; {os.cpu_count()} cores"
    )
    ratios: list[float] = []
    failed = False
    for run in range(args.repeat):
        if args.repeat > 1:
            print(f"-- run {run + 1}/{args.repeat}")
        ratio, ok = compare(source, template, plans, args.seconds, drain=not args.no_drain)
        ratios.append(ratio)
        failed = failed or not ok
    if args.repeat > 1:
        print(
            f"median wall ratio onair/ffmpeg over {args.repeat} runs: "
            f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
