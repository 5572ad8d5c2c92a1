"""A thread-safe, bounded byte feed: the event loop writes a container's bytes, a
decode thread reads them through PyAV.

`write()` never blocks. `read(n)` blocks until some bytes are there and may return
fewer than `n`; it returns b"" at the end, which is what PyAV's file-object reader
expects (no buffered wrapper: that added latency).

Past half of `max_bytes` buffered the feed asks its writer to wait (`when_room`):
a server stops reading from its publisher until the reader has taken the feed down
to a quarter, so a publisher faster than the pipeline is slowed by TCP's flow
control instead of losing media. Over `max_bytes` buffered (a writer that cannot
wait), a write is dropped whole and counted, unless it is
`essential` (a container header, a decoder configuration). Which bytes a format can
afford to lose is the writer's business: the FLV writer (`ingest.flvstream`) drops
whole tags, video until the next keyframe; a byte-stream container (MPEG-TS) loses
whole writes, which its demuxer resynchronises over.

The feed also remembers when each write arrived (`arrival_at(position)`), until
`forget_arrivals()`: the decoder maps its first packet's byte position to the
instant its bytes came in, the session's wall-clock origin.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
MAX_ARRIVALS = 65536  # writes remembered before the first packet at most


class ByteFeed:
    """Bounded single-producer single-consumer byte stream."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._head_offset = 0  # bytes of _chunks[0] already read
        self._buffered = 0
        self._eof = False
        self.dropped_writes = 0
        self.dropped_bytes = 0
        self.written_bytes = 0  # the stream position of the next byte written
        # (stream position of a write's first byte, its arrival), in stream order
        self._arrival_starts: list[int] = []
        self._arrivals: list[float] = []
        self._recording = True
        self._room_callbacks: list[Callable[[], None]] = []

    @property
    def buffered_bytes(self) -> int:
        with self._cond:
            return self._buffered

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._eof

    @property
    def recording_arrivals(self) -> bool:
        """Whether arrival instants are still wanted (until `forget_arrivals()`)."""
        return self._recording

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes stay within `max_bytes` (the reader only frees room)."""
        with self._cond:
            return self._buffered + size <= self.max_bytes

    def when_room(self, callback: Callable[[], None]) -> bool:
        """False if the feed takes more now (at most half full); else True, and
        `callback()` is called once (from the reader's thread) when the reader has
        taken it down to a quarter, or the feed ended."""
        with self._cond:
            if self._eof or self._buffered <= self.max_bytes // 2:
                return False
            self._room_callbacks.append(callback)
            return True

    def _take_room_callbacks(self) -> list[Callable[[], None]]:
        """Under the lock: the callbacks due now."""
        if self._room_callbacks and (self._eof or self._buffered <= self.max_bytes // 4):
            callbacks, self._room_callbacks = self._room_callbacks, []
            return callbacks
        return []

    def write(self, data: bytes, *, arrived: float | None = None, essential: bool = False) -> bool:
        """Append `data` unless it would pass `max_bytes` (essential data always goes in);
        False if dropped (counted). `arrived`: when it came in (Unix seconds). Ignored
        after close."""
        if not data:
            return True
        with self._cond:
            if self._eof:
                return False
            if not essential and self._buffered + len(data) > self.max_bytes:
                self.dropped_writes += 1
                self.dropped_bytes += len(data)
                return False
            if arrived is not None and self._recording:
                if len(self._arrivals) < MAX_ARRIVALS:
                    self._arrival_starts.append(self.written_bytes)
                    self._arrivals.append(arrived)
            self._chunks.append(data)
            self._buffered += len(data)
            self.written_bytes += len(data)
            self._cond.notify()
            return True

    def drop(self, size: int) -> None:
        """Count `size` bytes its writer chose not to write (a format's drop policy)."""
        with self._cond:
            self.dropped_writes += 1
            self.dropped_bytes += size

    def arrival_at(self, position: int) -> float | None:
        """When the byte at stream `position` arrived: the arrival of the last write
        with one that starts at or before it (the first such write, for a position
        before them all); the latest arrival for an unknown position (< 0); None if
        no write had an arrival."""
        with self._cond:
            if not self._arrivals:
                return None
            if position < 0:
                return self._arrivals[-1]
            index = bisect.bisect_right(self._arrival_starts, position) - 1
            return self._arrivals[max(index, 0)]

    def forget_arrivals(self) -> None:
        """Stop recording arrivals and free them."""
        with self._cond:
            self._recording = False
            self._arrival_starts = []
            self._arrivals = []

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
            due = self._take_room_callbacks()
        for callback in due:
            callback()
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
            due = self._take_room_callbacks()
        for callback in due:
            callback()

    def abort(self) -> None:
        """End of stream now: drop what is buffered."""
        with self._cond:
            self._eof = True
            self._chunks.clear()
            self._head_offset = 0
            self._buffered = 0
            self._cond.notify_all()
            due = self._take_room_callbacks()
        for callback in due:
            callback()
