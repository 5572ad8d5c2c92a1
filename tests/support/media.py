"""Media the tests make and read: sources (ffmpeg CLI), feeding a MediaQueue as ingest
does, probing output, and a ready-made ladder of real MPEG-TS segments.

The small test source (`SMALL_SIZE`, 320x180) and the small template
(`SMALL_TEMPLATE`, two rungs: 180p and 144p) are for scenarios that are not about the
ladder itself: parallel runs then do not starve each other of CPU.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ingest.formats import amf0, flv
from ingest.media import (
    AudioParams,
    MediaQueue,
    SessionEnd,
    SessionStart,
    VideoParams,
    nominal_frame_rate,
)
from media.segments import Segment, VariantInfo
from tests.support.waiting import wait_until

SMALL_SIZE = "320x180"  # the small test source, 16:9
SMALL_TEMPLATE = 4  # "small ladder": 180p + 144p (encoder/templates.json)
SMALL_RENDITIONS = ("180p", "144p")
LIVE_PROBE = {"probesize": "32", "analyzeduration": "0"}  # as ingest opens a live FLV


# Sources


def make_source(
    path: Path,
    width: int,
    height: int,
    seconds: float,
    *,
    fps: int = 30,
    gop: int = 30,
    fmt: str = "flv",
    audio: bool = True,
    audio_seconds: float | None = None,
) -> Path:
    """testsrc2 + sine, H.264 (ultrafast) + AAC, like a publisher's RTMP stream; the
    sound lasts `audio_seconds` if given (a publisher's audio running past its video)."""
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        *("-f", "lavfi", "-t", str(seconds)),
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-t", str(audio_seconds or seconds)]
        cmd += ["-i", "sine=frequency=440:sample_rate=48000"]
    cmd += [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(gop),
        "-pix_fmt",
        "yuv420p",
    ]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    cmd += ["-f", fmt, str(path)]
    subprocess.run(cmd, check=True)
    return path


def sample_tags(path: Path) -> tuple[dict[str, Any], list[flv.Tag]]:
    """(onMetaData, audio/video tags) of an FLV file."""
    _, tags = flv.parse(path.read_bytes())
    script = next(t for t in tags if t.kind == flv.TAG_SCRIPT)
    metadata = dict(amf0.decode_all(script.payload)[1])
    return metadata, [t for t in tags if t.kind in (flv.TAG_AUDIO, flv.TAG_VIDEO)]


def decode_file_pts(path: Path) -> tuple[list[int], list[int]]:
    """(video pts, audio pts) of every frame PyAV decodes from a media file."""
    video: list[int] = []
    audio: list[int] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            for frame in packet.decode():
                assert isinstance(frame, av.VideoFrame | av.AudioFrame)
                assert frame.pts is not None
                (video if packet.stream.type == "video" else audio).append(frame.pts)
    return video, audio


# Feeding a MediaQueue as ingest does


def open_live(path: Path) -> av.container.InputContainer:
    return av.open(str(path), options=LIVE_PROBE)


def session_start(container: av.container.InputContainer, session: int) -> SessionStart:
    """The SessionStart ingest would put for this container (live probe: size may be 0)."""
    video = audio = None
    if container.streams.video:
        v = container.streams.video[0]
        rate = v.average_rate
        video = VideoParams(
            v.codec_context.name,
            v.codec_context.width,
            v.codec_context.height,
            nominal_frame_rate(Fraction(rate)) if rate else None,
            Fraction(v.time_base),
            v,
            bytes(v.codec_context.extradata or b"") or None,
        )
    if container.streams.audio:
        a = container.streams.audio[0]
        audio = AudioParams(
            a.codec_context.name,
            a.codec_context.sample_rate,
            a.codec_context.channels,
            Fraction(a.time_base),
            a,
            bytes(a.codec_context.extradata or b"") or None,
        )
    return SessionStart(session, video, audio)


def feed(
    path: Path,
    queue: MediaQueue,
    session: int = 0,
    *,
    decode: bool = True,
    block: bool = True,
    on_item: Callable[[int], None] | None = None,
    keep: list[Any] | None = None,
) -> int:
    """Demux (and decode) `path` into `queue` as ingest does; returns media items offered.

    block=True waits while the queue is full (nothing dropped); False drops like live.
    """
    container = open_live(path)
    if keep is not None:
        keep.append(container)  # passthrough packets refer to it
    queue.put(session_start(container, session))
    offered = 0
    streams = [s for s in (*container.streams.video[:1], *container.streams.audio[:1])]
    for packet in container.demux(streams):
        items: list[Any]
        if decode:
            items = list(packet.decode())
        elif packet.size:
            items = [packet]
        else:
            items = []
        for item in items:
            while block and len(queue) >= queue.max_items:
                time.sleep(0.001)
            queue.put(item)
            offered += 1
            if on_item is not None:
                on_item(offered)
    queue.put(SessionEnd(session, "end of file"))
    return offered


def items_until_a_video_frame(queue: MediaQueue, timeout_seconds: float) -> list[Any]:
    """What the queue gives until its first video frame (no end of stream sent)."""
    got: list[Any] = []

    def a_video_frame() -> bool:
        item = queue.get(0.01)
        if item is not None:
            got.append(item)
        return any(isinstance(i, av.VideoFrame) for i in got)

    wait_until(a_video_frame, timeout_seconds, "the first video frame (no end of stream sent)")
    return got


# Probing


def ffprobe(path: Path, *entries: str, data: bytes | None = None) -> tuple[dict[str, Any], str]:
    """The ffprobe CLI's JSON on `path` (streams, plus `entries`) and its stderr at
    `-v error` ("" when it read the file cleanly); `data` is written to `path` first."""
    if data is not None:
        path.write_bytes(data)
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", *entries, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout), result.stderr.strip()


# A ready-made ladder for the packager


LADDER_SEGMENT_SECONDS = 0.5  # of the packager tests' ladder

# name, width, height, video kb/s
_RUNGS = [("360p", 320, 180, 400), ("240p", 256, 144, 200), ("144p", 160, 96, 100)]


@dataclass(frozen=True)
class Ladder:
    """Ten real MPEG-TS segments (video + audio) per rendition."""

    variants: list[VariantInfo]
    segments: dict[str, list[tuple[bytes, float]]]  # rendition -> [(data, duration)]

    def segment(self, rendition: str, sequence: int, **kwargs: object) -> Segment:
        """Segment `sequence` of `rendition`, cycling through the ten real ones."""
        data, duration = self.segments[rendition][sequence % len(self.segments[rendition])]
        return Segment(
            rendition=rendition,
            sequence=sequence,
            start_seconds=sequence * LADDER_SEGMENT_SECONDS,
            duration_seconds=duration,
            data=data,
            **kwargs,  # type: ignore[arg-type]
        )


def make_ladder(root: Path) -> Ladder:
    """Encode the three renditions of `Ladder` with the ffmpeg CLI into `root`."""
    variants = []
    segments: dict[str, list[tuple[bytes, float]]] = {}
    for name, width, height, kbps in _RUNGS:
        out = root / name
        out.mkdir()
        subprocess.run(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={width}x{height}:rate=24",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "5",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "12",
                "-keyint_min",
                "12",
                "-sc_threshold",
                "0",
                "-b:v",
                f"{kbps}k",
                "-c:a",
                "aac",
                "-b:a",
                "32k",
                "-f",
                "segment",
                "-segment_time",
                str(LADDER_SEGMENT_SECONDS),
                "-segment_list",
                str(out / "list.csv"),
                "-segment_list_type",
                "csv",
                str(out / "seg_%06d.ts"),
            ],
            check=True,
            timeout=60,
        )
        with open(out / "list.csv", newline="") as f:
            rows = list(csv.reader(f))
        segments[name] = [
            ((out / row[0]).read_bytes(), float(row[2]) - float(row[1])) for row in rows
        ]
        variants.append(
            VariantInfo(name, width, height, 24.0, "avc1.42c00d,mp4a.40.2", (kbps + 32) * 1000)
        )
    return Ladder(variants, segments)


def ffmpeg_warnings(path: Path | str, *, strict: bool = False) -> str:
    """What `ffmpeg -v warning` says decoding the whole of `path` (a file or a URL): ""
    when it is clean
    (a failed decode says its exit code if ffmpeg printed nothing); `strict` stops at
    the first error (`-xerror`)."""
    result = subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-nostdin", "-v", "warning"),
            *(("-xerror",) if strict else ()),
            *("-i", str(path), "-f", "null", "-"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = (result.stdout + result.stderr).strip()
    return said or ("" if result.returncode == 0 else f"exit {result.returncode}")
