"""A thread-safe, bounded byte feed: the event loop writes FLV, a decode thread reads.

`write()`/`write_tag()` never block. `read(n)` blocks until some bytes are there and
may return fewer than `n`; it returns b"" at the end, which is what PyAV's
file-object reader expects (no buffered wrapper: that added latency).

Over `max_bytes` buffered, whole tags are dropped and counted: audio tags one by
one, video tags until the next keyframe that fits (a decoder cannot use frames
whose reference was dropped). Decoder configuration tags (sequence headers) are
kept regardless, as long as they are small.
"""

from __future__ import annotations

import collections
import threading

from ingest import flv

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
_MAX_ESSENTIAL_TAG_BYTES = 64 * 1024


class FlvFeed:
    """Bounded single-producer single-consumer byte stream with FLV-aware dropping."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._head_offset = 0  # bytes of _chunks[0] already read
        self._buffered = 0
        self._eof = False
        self._skip_video = False  # dropping video until the next keyframe
        self.dropped_tags = 0
        self.dropped_bytes = 0
        self.written_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        with self._cond:
            return self._buffered

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._eof

    def write(self, data: bytes) -> None:
        """Append raw bytes (e.g. the FLV header); never dropped, ignored after close."""
        if not data:
            return
        with self._cond:
            if self._eof:
                return
            self._append(data)

    def write_tag(self, kind: int, timestamp_ms: int, payload: bytes) -> bool:
        """Append one FLV tag unless the byte cap says drop; False if dropped."""
        data = flv.tag(kind, timestamp_ms, payload)
        keyframe = essential = False
        if kind == flv.TAG_VIDEO:
            info = flv.video_info(payload)
            if info is not None:
                keyframe = info.keyframe and info.frame
                essential = info.config
        elif kind == flv.TAG_AUDIO:
            audio = flv.audio_info(payload)
            essential = audio is not None and audio.config
        essential = essential and len(data) <= _MAX_ESSENTIAL_TAG_BYTES
        with self._cond:
            if self._eof:
                return False
            over = self._buffered + len(data) > self.max_bytes
            if kind == flv.TAG_VIDEO and not essential:
                if over or (self._skip_video and not keyframe):
                    self._skip_video = True
                    return self._drop(data)
                self._skip_video = False
            elif over and not essential:
                return self._drop(data)
            self._append(data)
            return True

    def _drop(self, data: bytes) -> bool:
        self.dropped_tags += 1
        self.dropped_bytes += len(data)
        return False

    def _append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self.written_bytes += len(data)
        self._cond.notify()

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all buffered if negative); blocks until some; b"" at end."""
        with self._cond:
            while not self._chunks and not self._eof:
                self._cond.wait()
            if not self._chunks:
                return b""
            if size < 0:
                size = self._buffered
            out = bytearray()
            while self._chunks and len(out) < size:
                head = self._chunks[0]
                take = min(size - len(out), len(head) - self._head_offset)
                out += head[self._head_offset : self._head_offset + take]
                self._head_offset += take
                if self._head_offset == len(head):
                    self._chunks.popleft()
                    self._head_offset = 0
            self._buffered -= len(out)
            return bytes(out)

    def wait_readable(self, timeout: float | None = None) -> bool:
        """Block until bytes are buffered (True) or the feed ended empty (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self._chunks or self._eof, timeout)
            return bool(self._chunks)

    def close(self) -> None:
        """End of stream: the reader gets what is buffered, then b""."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        """End of stream now: drop what is buffered."""
        with self._cond:
            self._eof = True
            self._chunks.clear()
            self._head_offset = 0
            self._buffered = 0
            self._cond.notify_all()
