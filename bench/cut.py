"""Cut: onair's frame-accurate VOD cut against the ffmpeg CLI re-encoding the same range.

    .venv/bin/python bench/cut.py [--minutes 10] [--no-live]

In one run:
  1. a 720p30 testsrc2 + sine source of `--minutes` + 4 s (cached in bench/out/) is
     recorded as a template-2 live (720p/480p/360p) into an embedded SeaweedFS by
     onair's LiveEncoder and HlsWriter, fed faster than real time (not timed);
  2. onair: `vod.cut_video` cuts a `--minutes` range starting 1.033 s in (both edges
     mid-GOP) into the VOD (three renditions, master, original.mp4), in this process:
     wall time and the process's CPU time (SeaweedFS's own work is not counted);
  3. ffmpeg: the CLI re-encodes the same range frame-accurately (`-ss` before `-i`)
     from the recording's top rendition (downloaded first, not timed) into the same
     ladder as HLS (libx264 with the template's preset, bitrates, VBV caps, 2 s closed
     GOPs, AAC): wall time and CPU time of the process (no MP4: in its favour);
  4. unless `--no-live`: a second onair cut while a template-2 live is fed in real
     time in this process; the live's dropped frames (queue and renditions) are
     printed, with the cut's nice value.
Prints each, the ratio ffmpeg/onair (target: >= 20) and onair's CPU/wall (<= 1 core).
The figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from bench.throughput import (  # noqa: E402
    ffmpeg_ladder_command,
    run_measured,
    synthetic_source,
)
from encoder.ladder import plan_ladder  # noqa: E402
from encoder.live_encoder import LiveEncoder  # noqa: E402
from encoder.templates import get_template  # noqa: E402
from ingest.media import (  # noqa: E402
    AudioParams,
    MediaQueue,
    SessionEnd,
    SessionStart,
    VideoParams,
    WallClockOrigin,
)
from media.segments import Segment, SegmentSink, VariantInfo  # noqa: E402
from packager.hls import HlsWriter  # noqa: E402
from packager.object_store import S3Storage  # noqa: E402
from packager.s3server import EmbeddedS3  # noqa: E402
from tests.support.ports import free_port_block  # noqa: E402
from vod import CutRequest, CutResult, cut_video  # noqa: E402
from vod.cut import CUT_NICE  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 30
TEMPLATE = 2
FROM_MS = 1033  # frame 31: mid-GOP (keyframes every 2 s)


def source_file(seconds: int) -> Path:
    """The cached source: 720p30 testsrc2 + sine, H.264 (ultrafast, 1 s GOP) + AAC, FLV."""
    return synthetic_source(
        OUT / f"cut_src_{HEIGHT}p{FPS}_{seconds}s.flv",
        f"{WIDTH}x{HEIGHT}",
        FPS,
        seconds,
        ["-preset", "ultrafast", "-g", str(FPS)],
    )


def session_start(container: av.container.InputContainer, unix_seconds: float) -> SessionStart:
    video = container.streams.video[0]
    audio = container.streams.audio[0]
    return SessionStart(
        0,
        VideoParams("h264", video.width, video.height, Fraction(FPS), video.time_base, video),
        AudioParams(
            "aac",
            audio.codec_context.sample_rate,
            audio.codec_context.channels,
            audio.time_base,
            audio,
        ),
        WallClockOrigin(unix_seconds, Fraction(0)),
    )


def feed(queue: MediaQueue, source: Path, *, real_time: bool, stop: threading.Event) -> None:
    """Decode `source` into `queue`: as fast as the queue takes it, or paced by the
    media's timestamps (a live: a full queue drops)."""
    container = av.open(str(source), mode="r", options={"probesize": "32"})
    started = time.monotonic()
    queue.put(session_start(container, time.time()))
    streams = [container.streams.video[0], container.streams.audio[0]]
    for packet in container.demux(streams):
        if stop.is_set():
            break
        for frame in packet.decode():
            if real_time and frame.pts is not None and frame.time_base is not None:
                due = started + float(frame.pts * frame.time_base)
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                queue.put(frame)
            else:
                while len(queue) >= queue.max_items:
                    time.sleep(0.005)
                queue.put(frame)
    queue.put(SessionEnd(0, "end of file"))
    queue.close()


def record(storage: S3Storage, bucket: str, prefix: str, source: Path, spool: Path) -> float:
    """The recorded live (template 2, faster than real time); its wall time."""
    started = time.monotonic()
    writer = HlsWriter(storage, bucket, prefix, spool, label="bench")
    queue = MediaQueue(240)
    encoder = LiveEncoder(get_template(TEMPLATE), queue, writer, label="bench-record")
    encoder.start()
    feed(queue, source, real_time=False, stop=threading.Event())
    encoder.stop(timeout_seconds=3600)
    if encoder.failed is not None:
        raise encoder.failed
    return time.monotonic() - started


class NullSink(SegmentSink):
    """Takes a live's segments and keeps nothing."""

    def start(self, variants: Sequence[VariantInfo], segment_seconds: float) -> None:
        pass

    def add_segment(self, segment: Segment) -> None:
        pass

    def finish(self, timeout_seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def onair_cut(
    storage: S3Storage, bucket: str, prefix: str, name: str, to_ms: int
) -> tuple[float, float, CutResult]:
    request = CutRequest(bucket, prefix, f"{prefix}/videos/{name}", None, FROM_MS, to_ms)
    cpu, started = cpu_seconds(), time.monotonic()
    result = cut_video(storage, request)
    return time.monotonic() - started, cpu_seconds() - cpu, result


def download_top(storage: S3Storage, bucket: str, prefix: str, rendition: str, into: Path) -> Path:
    """The recording's top rendition as local files (event.m3u8 and its segments)."""
    client = storage.client
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{rendition}/"):
        for item in page.get("Contents", []):
            name = item["Key"].rsplit("/", 1)[1]
            if name.endswith(".ts") or name == "event.m3u8":
                client.download_file(bucket, item["Key"], str(into / name))
    return into / "event.m3u8"


def ffmpeg_cut(playlist: Path, seconds: float, out_dir: Path) -> tuple[float, float, int]:
    template = get_template(TEMPLATE)
    plans = plan_ladder(template, WIDTH, HEIGHT)
    cmd = ffmpeg_ladder_command(playlist, template, plans, out_dir)
    at = cmd.index("-i")
    cmd[at:at] = ["-ss", f"{FROM_MS / 1000:.3f}", "-t", f"{seconds:.3f}"]
    wall, _, status, cpu = run_measured(cmd)
    return wall, cpu, status


def cut_under_live(
    storage: S3Storage, bucket: str, prefix: str, source: Path, to_ms: int
) -> tuple[float, int, int, int]:
    """A cut while a template-2 live runs in real time: (cut wall, live frames encoded,
    dropped by the live's queue, dropped by its renditions) over the cut's span."""
    queue = MediaQueue(120)
    encoder = LiveEncoder(get_template(TEMPLATE), queue, NullSink(), label="bench-live")
    encoder.start()
    stop = threading.Event()
    feeder = threading.Thread(
        target=feed, args=(queue, source), kwargs={"real_time": True, "stop": stop}
    )
    feeder.start()
    time.sleep(5.0)  # the live settles
    before = encoder.stats()
    dropped_before = queue.dropped
    wall, _, _ = onair_cut(storage, bucket, prefix, "under-live", to_ms)
    after = encoder.stats()
    dropped = queue.dropped - dropped_before
    stop.set()
    feeder.join()
    encoder.stop(timeout_seconds=60)
    encoded = sum(a.frames_encoded - b.frames_encoded for a, b in zip(after, before, strict=True))
    rendition_drops = sum(
        a.dropped_frames - b.dropped_frames for a, b in zip(after, before, strict=True)
    )
    return wall, encoded, dropped, rendition_drops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args()
    if os.environ.get("ONAIR_BENCH_LOG"):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        for noisy in ("encoder", "packager", "botocore", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    range_seconds = args.minutes * 60
    source = source_file(int(range_seconds) + 4)
    with tempfile.TemporaryDirectory(prefix="onair-bench-cut-") as tmp:
        root = Path(tmp)
        with EmbeddedS3(
            root / "s3",
            free_port_block(),
            access_key="bench-" + secrets.token_hex(4),
            secret_key=secrets.token_urlsafe(18),
        ) as server:
            storage = S3Storage(server.endpoint, server.access_key, server.secret_key, "us-east-1")
            bucket, prefix = "bench", "lives/cut"
            storage.ensure_bucket(bucket)
            recorded = record(storage, bucket, prefix, source, root / "spool")
            print(f"recorded {source.name} as a template-{TEMPLATE} live in {recorded:.1f} s")
            to_ms = FROM_MS + round(range_seconds * 1000)

            wall, cpu, result = onair_cut(storage, bucket, prefix, "bench", to_ms)
            print(
                f"onair : {wall:7.2f} s wall, {cpu:7.2f} s CPU ({cpu / wall:.2f} cores), "
                f"{result.duration_ms / 1000:.3f} s video, {len(result.renditions)} renditions, "
                f"{result.copied_segments} segments copied, "
                f"{result.reencoded_segments} re-encoded, MP4 included"
            )
            local = root / "top"
            local.mkdir()
            playlist = download_top(storage, bucket, prefix, result.renditions[0], local)
            out_dir = root / "ffmpeg"
            out_dir.mkdir()
            ffmpeg_wall, ffmpeg_cpu, status = ffmpeg_cut(playlist, range_seconds, out_dir)
            segments = len(list(out_dir.glob("*.ts")))
            print(
                f"ffmpeg: {ffmpeg_wall:7.2f} s wall, {ffmpeg_cpu:7.2f} s CPU "
                f"({ffmpeg_cpu / ffmpeg_wall:.2f} cores), {segments} segments (exit {status})"
            )
            print(
                f"ratio ffmpeg/onair: wall {ffmpeg_wall / wall:.1f}x, CPU {ffmpeg_cpu / cpu:.1f}x "
                f"(target: >= 20x for a {args.minutes:g}-minute range)"
            )
            if not args.no_live:
                wall, encoded, queue_drops, rendition_drops = cut_under_live(
                    storage, bucket, prefix, source, to_ms
                )
                print(
                    f"under a real-time template-{TEMPLATE} live: the cut took {wall:.2f} s "
                    f"(nice +{CUT_NICE}); the live encoded {encoded} frames meanwhile, dropped "
                    f"{queue_drops} at its queue and {rendition_drops} in its renditions"
                )


if __name__ == "__main__":
    main()
