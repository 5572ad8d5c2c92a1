"""A PyAV RTMP publisher, run as a subprocess by the tests.

usage: pyav_publisher.py URL VIDEO_CODEC WIDTH HEIGHT FPS SECONDS

Encodes testsrc2 video and a sine tone with PyAV and publishes them with PyAV's own
FLV muxer over RTMP. PyAV's (FFmpeg 8) FLV muxer writes HEVC as enhanced FLV
(ex-header, FourCC hvc1) by itself.
"""

from __future__ import annotations

import sys
from fractions import Fraction

import av


def main() -> int:
    url, codec = sys.argv[1], sys.argv[2]
    width, height, fps, seconds = (int(v) for v in sys.argv[3:7])
    out = av.open(url, "w", format="flv")
    options = {"preset": "ultrafast", "g": str(fps)}
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
    for index in range(fps * seconds):
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
