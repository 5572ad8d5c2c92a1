"""A PyAV RTMP publisher that paints its send time into every picture, run as a
subprocess by the latency tests and `bench/latency.py`.

usage: clock_publisher.py URL SECONDS [WIDTH HEIGHT]

Each frame carries the wall clock (Unix milliseconds, the low 32 bits) of the instant
it is encoded, as a block code: 2 rows of 16 blocks across the top quarter of the
picture, white for a 1 and black for a 0, most significant bit first (`read_clock`
in the page does the reverse from the video element). x264 ultrafast with
zerolatency: the publisher adds no delay of its own; AAC silence rides along.
"""

from __future__ import annotations

import sys
import time
from fractions import Fraction

import av
import numpy as np

FPS = 30
BITS, ROWS = 32, 2
WHITE, BLACK, GREY = 235, 16, 128


def paint(width: int, height: int, millis: int) -> np.ndarray:
    """A yuv420p picture (one array: Y, then U, then V) carrying `millis`."""
    y = np.full((height, width), GREY, np.uint8)
    per_row = BITS // ROWS
    block_w, block_h = width // per_row, height // 8
    for bit in range(BITS):
        row, column = divmod(bit, per_row)
        value = (millis >> (BITS - 1 - bit)) & 1
        top, left = row * block_h, column * block_w
        y[top : top + block_h, left : left + block_w] = WHITE if value else BLACK
    chroma = np.full((height // 4, width), 128, np.uint8)  # U and V: no colour
    return np.concatenate([y, chroma, chroma])


def main() -> int:
    url, seconds = sys.argv[1], float(sys.argv[2])
    width, height = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (320, 180)
    container = av.open(url, "w", format="flv")
    video = container.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS)}
    audio = container.add_stream("aac", rate=48_000)
    audio.codec_context.layout = "stereo"
    samples = 0
    start = time.monotonic()
    for n in range(int(seconds * FPS)):
        due = start + n / FPS
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        millis = int(time.time() * 1000) & 0xFFFFFFFF
        frame = av.VideoFrame.from_ndarray(paint(width, height, millis), format="yuv420p")
        frame.pts = n
        frame.time_base = Fraction(1, FPS)
        for packet in video.encode(frame):
            container.mux(packet)
        while samples < (n + 1) * 48_000 // FPS:
            sound = av.AudioFrame.from_ndarray(
                np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
            )
            sound.sample_rate = 48_000
            sound.pts = samples
            sound.time_base = Fraction(1, 48_000)
            samples += 1024
            for packet in audio.encode(sound):
                container.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode(None):
            container.mux(packet)
    container.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
