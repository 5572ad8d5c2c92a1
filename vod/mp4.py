"""The video's MP4 (`original.mp4`): its top rendition's VOD segments remuxed, no
re-encode, with the `moov` box first (`movflags=+faststart`) so a download plays
while it arrives.

The segments are read one after another as one MPEG-TS stream (their counters and
timestamps run on across the seams), so memory holds one segment at a time; the
MP4 is written to a temporary file, then uploaded (multipart when large).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import av

MP4_OPTIONS = {"movflags": "+faststart"}


class _Chained(io.RawIOBase):
    """A read-only stream over byte chunks produced one at a time."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not len(self._current):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk)
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        return count


def remux_to_mp4(
    segments: Iterable[bytes], path: Path, *, cancelled: Callable[[], bool] | None = None
) -> None:
    """Write the TS `segments`, in order, as one faststart MP4 at `path`. The first
    video frame starts at 0."""
    source = io.BufferedReader(_Chained(segments), buffer_size=1 << 20)
    with av.open(source, mode="r", format="mpegts") as given:
        streams = [*given.streams.video[:1], *given.streams.audio[:1]]
        with av.open(str(path), "w", format="mp4", options=MP4_OPTIONS) as output:
            outputs = {s.index: output.add_stream_from_template(s) for s in streams}
            origin: int | None = None
            for packet in given.demux(streams):
                if cancelled is not None and cancelled():
                    raise InterruptedError("cancelled")
                if not packet.size or packet.pts is None or packet.dts is None:
                    continue
                if origin is None:
                    # Every stream is in 1/90000 in MPEG-TS: one shift for both.
                    origin = int(packet.pts) if packet.stream.type == "video" else None
                    if origin is None:
                        continue  # audio before the first video frame: dropped
                packet.pts = int(packet.pts) - origin
                packet.dts = int(packet.dts) - origin
                packet.stream = outputs[packet.stream.index]
                output.mux(packet)
