"""Restream test media: short sources made with the ffmpeg CLI (FLV with AVCC and raw
AAC, MPEG-TS with Annex B and ADTS), demuxed as ingest puts them on the live's source
track, and FLV written and read back with the ffmpeg CLI."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from ingest.formats import flv
from ingest.media import SessionStart, SourcePacket, source_packet
from ingest.packets import AudioTimestamps
from restream.flv import FlvTag
from tests.support.media import LIVE_PROBE, ffmpeg_warnings, session_start

FPS = 30
SECONDS = 3
FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error", "-y")
FRAME_PTS = ("-show_entries", "frame=pts_time")


def encode(path: Path, *codec: str, size: str = "320x180", seconds: float = SECONDS) -> Path:
    """testsrc2 at FPS with a 440 Hz sine (AAC, 48 kHz stereo) into `path`."""
    subprocess.run(
        [
            *FFMPEG,
            *("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", str(seconds), "-pix_fmt", "yuv420p", *codec),
            *("-c:a", "aac", "-ac", "2", str(path)),
        ],
        check=True,
        timeout=60,
    )
    return path


def remux(source: Path, path: Path) -> Path:
    subprocess.run([*FFMPEG, "-i", str(source), "-c", "copy", str(path)], check=True, timeout=60)
    return path


@dataclass(frozen=True)
class Source:
    """A source file as the source track carries it."""

    start: SessionStart
    video_extradata: bytes | None
    audio_extradata: bytes | None
    packets: list[SourcePacket]


def demux(path: Path, session: int) -> Source:
    """SessionStart and SourcePackets of `path`, as ingest puts them on the track."""
    with av.open(str(path), options=LIVE_PROBE) as container:
        start = session_start(container, session)
        video, audio = container.streams.video[0], container.streams.audio[0]
        video_extradata = bytes(video.codec_context.extradata or b"") or None
        audio_extradata = bytes(audio.codec_context.extradata or b"") or None
        timestamps = AudioTimestamps()
        packets = []
        for packet in container.demux(video, audio):
            if not packet.size:
                continue
            if packet.stream.type == "audio":
                timestamps.fill(packet)  # MPEG-TS stamps one AAC frame per PES
            packets.append(source_packet(session, packet))
    return Source(start, video_extradata, audio_extradata, packets)


def write_flv(path: Path, tags: list[FlvTag]) -> Path:
    path.write_bytes(flv.file_header() + b"".join(tag.to_bytes() for tag in tags))
    return path


def ffprobe_video_frames(path: Path) -> list[float]:
    """pts (s) of every video frame ffprobe decodes."""
    result = subprocess.run(
        [*("ffprobe", "-v", "error", "-select_streams", "v", "-of", "json"), *FRAME_PTS, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [float(frame["pts_time"]) for frame in json.loads(result.stdout)["frames"]]


def ffmpeg_errors(path: Path) -> str:
    return ffmpeg_warnings(path, strict=True)
