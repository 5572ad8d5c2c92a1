"""Real publishers, as subprocesses: the ffmpeg CLI, GStreamer's rtmp2sink, and PyAV's
own FLV muxer (`pyav_publisher.py`), each encoding testsrc2 and a sine tone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.media import SMALL_SIZE

PYAV_PUBLISHER = Path(__file__).with_name("pyav_publisher.py")


def ffmpeg_publish_cmd(
    url: str,
    *,
    size: str = "320x240",
    rate: int | str = 30,  # "30000/1001" too (then give `gop_frames`)
    seconds: float = 3,
    realtime: bool = False,
    gop_frames: int | None = None,
    extra: Sequence[str] = (),
    output: Sequence[str] | None = None,
) -> list[str]:
    """ffmpeg encoding testsrc2 + a sine tone (H.264 + AAC) and publishing to `url`."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *(["-re"] if realtime else []),
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        str(gop_frames or rate),
        "-c:a",
        "aac",
        *extra,
        *(output if output is not None else ["-f", "flv", url]),
    ]


def ffmpeg_sample(path: Path, output: Sequence[str], extra: Sequence[str] = ()) -> Path:
    """What `ffmpeg_publish_cmd` publishes (3 s of 320x240), written to `path` with the
    muxer options `output` ("-f", "flv")."""
    subprocess.run(
        ffmpeg_publish_cmd("", extra=extra, output=[*output, str(path)]), check=True, timeout=60
    )
    return path


def pyav_publish_cmd(
    url: str, codec: str, width: int, height: int, fps: int, seconds: int, pace: str = ""
) -> list[str]:
    """PyAV's FLV muxer publishing; `pace` (`1:5,0.5:4`: speed and media seconds)
    paces it, else it goes as fast as the connection takes (`pyav_publisher.py`)."""
    return [
        sys.executable,
        str(PYAV_PUBLISHER),
        url,
        codec,
        str(width),
        str(height),
        str(fps),
        str(seconds),
        *([pace] if pace else []),
    ]


def gstreamer_publish_cmd(url: str, sink: str, frames: int = 90) -> list[str]:
    """gst-launch publishing H.264 (x264enc) + AAC (voaacenc) through `sink`."""
    audio_buffers = frames * 44100 // 30 // 1024 + 1
    return [
        "gst-launch-1.0",
        "-q",
        "-e",
        "videotestsrc",
        f"num-buffers={frames}",
        "!",
        "video/x-raw,width=320,height=240,framerate=30/1",
        "!",
        "x264enc",
        "key-int-max=30",
        "speed-preset=veryfast",
        "!",
        "h264parse",
        "!",
        "flvmux",
        "name=mux",
        "streamable=true",
        "!",
        sink,
        "sync=false",
        f"location={url}",
        "audiotestsrc",
        f"num-buffers={audio_buffers}",
        "samplesperbuffer=1024",
        "!",
        "audio/x-raw,rate=44100,channels=2",
        "!",
        "voaacenc",
        "!",
        "aacparse",
        "!",
        "mux.",
    ]


async def run_process(cmd: Sequence[str], within: float = 90) -> tuple[int, str]:
    """Run `cmd`; (exit code, stderr). Kills it and fails the test on timeout."""
    process = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        raise AssertionError(f"{cmd[0]} did not finish within {within}s") from None
    finally:  # also when the test fails or is cancelled meanwhile: no stray publisher
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


async def publish(
    url: str,
    seconds: float,
    size: str = SMALL_SIZE,
    rate: int = 30,
    realtime: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[bytes]:
    """The ffmpeg CLI publishing H.264 + AAC to `url`, as a broadcaster would (in real
    time unless `realtime` is false); the small test source unless `size` says otherwise."""
    command = ffmpeg_publish_cmd(
        url,
        size=size,
        rate=rate,
        seconds=seconds,
        realtime=realtime,
        extra=("-pix_fmt", "yuv420p", "-b:a", "128k", *extra),
    )
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=seconds * 4 + 30)
    return subprocess.CompletedProcess(command, process.returncode or 0, out, err)
