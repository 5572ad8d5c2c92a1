"""A PyAV RTMP publisher, run as a subprocess by the tests.

usage: pyav_publisher.py URL VIDEO_CODEC WIDTH HEIGHT FPS SECONDS [PACE]

Encodes testsrc2 video and a sine tone with PyAV and publishes them with PyAV's own
FLV muxer over RTMP. PyAV's (FFmpeg 8) FLV muxer writes HEVC as enhanced FLV
(ex-header, FourCC hvc1) by itself.

Without PACE it publishes as fast as the connection takes. PACE paces it, as
`SPEED:MEDIA_SECONDS,...` (`1:5,0.5:4`: 5 s of media in real time, then 4 s at half
speed, taking 8 s); past the schedule, real time.
"""

from __future__ import annotations

import sys
import time
from fractions import Fraction

import av


def parse_pace(text: str) -> list[tuple[float, float]]:
    """`SPEED:MEDIA_SECONDS,...` as (speed, media seconds) pairs."""
    return [(float(s), float(m)) for s, m in (part.split(":") for part in text.split(","))]


def wall_offset(media_seconds: float, pace: list[tuple[float, float]]) -> float:
    """When (seconds after the first frame) the frame at `media_seconds` is due."""
    wall = start = 0.0
    for speed, length in pace:
        if media_seconds <= start + length:
            return wall + (media_seconds - start) / speed
        wall += length / speed
        start += length
    return wall + media_seconds - start


def main() -> int:
    url, codec = sys.argv[1], sys.argv[2]
    width, height, fps, seconds = (int(v) for v in sys.argv[3:7])
    pace = parse_pace(sys.argv[7]) if len(sys.argv) > 7 else None
    # Paced: every packet leaves at once (no buffering in the muxer, none in x264).
    out = av.open(url, "w", format="flv", options={"flush_packets": "1"} if pace else None)
    options = {"preset": "ultrafast", "g": str(fps)}
    if pace is not None and codec == "libx264":
        options["tune"] = "zerolatency"
    if codec == "libx265":
        options["x265-params"] = f"log-level=error:keyint={fps}"
    video = out.add_stream(codec, rate=fps, options=options)
    assert isinstance(video, av.VideoStream)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    audio = out.add_stream("aac", rate=48000)
    assert isinstance(audio, av.AudioStream)
    audio.layout = "stereo"
    graph = f"testsrc2=size={width}x{height}:rate={fps}"
    video_in = av.open(graph, format="lavfi")
    audio_in = av.open("sine=frequency=440:sample_rate=48000", format="lavfi")
    frames = video_in.decode(video=0)
    samples = audio_in.decode(audio=0)
    audio_pts = 0
    began = time.monotonic()
    for index in range(fps * seconds):
        if pace is not None:
            time.sleep(max(0.0, began + wall_offset(index / fps, pace) - time.monotonic()))
        frame = next(frames)
        frame.pts, frame.time_base = index, Fraction(1, fps)
        for packet in video.encode(frame):
            out.mux(packet)
        while audio_pts * fps < (index + 1) * 48000:
            chunk = next(samples)
            chunk.pts, chunk.time_base = audio_pts, Fraction(1, 48000)
            audio_pts += chunk.samples
            for packet in audio.encode(chunk):
                out.mux(packet)
    for packet in [*video.encode(), *audio.encode()]:
        out.mux(packet)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
