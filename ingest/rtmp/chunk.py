"""The RTMP chunk stream: a sans-IO demuxer (`ChunkReader`) and muxer (`ChunkWriter`).

Timestamp rules the reader follows (RTMP 1.0 spec 5.3.1, and what ffmpeg, librtmp
and GStreamer write):
- a type 0 header carries the absolute timestamp, types 1 and 2 a delta;
- a type 3 chunk that starts a NEW message adds the chunk stream's last timestamp
  field again (the delta of a type 1/2 header, or the value of a type 0 header);
- a field of 0xFFFFFF means a 4-byte extended timestamp follows the header, and
  type 3 chunks of that chunk stream repeat it. On continuation chunks a writer
  may omit it, so there the 4 bytes are taken only when they repeat the value.

Limits: a declared message length above `max_message_bytes`, partial messages
adding up to more than that, a chunk size outside 1..2^24, more than
`max_chunk_streams` chunk stream ids: ProtocolError (the connection ends).
"""

from __future__ import annotations

import collections
import struct

from ingest.rtmp import messages
from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.messages import Message

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_WINDOW_ACK_SIZE = 2_500_000
DEFAULT_MAX_CHUNK_STREAMS = 256
MAX_CHUNK_STREAM_ID = 65599
EXTENDED = 0xFFFFFF

_HEADER_SIZES = (11, 7, 3, 0)
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")


class _InStream:
    """What the reader remembers about one chunk stream id."""

    __slots__ = (
        "extended",
        "length",
        "partial",
        "stream_id",
        "timestamp",
        "ts_field",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0  # absolute timestamp of the current (or last) message
        self.ts_field = 0  # the last type 0/1/2 header's timestamp value, extension applied
        self.extended = False  # that header used the extended timestamp
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.partial: bytearray | None = None  # the message being assembled


class ChunkReader:
    """Reassembles messages from the bytes of a peer's chunk stream.

    `feed()` bytes as they arrive, then call `next_message()` until it returns None.
    Protocol control messages take effect the moment they complete (Set Chunk Size
    applies to the very next chunk, Abort drops a partial message, Window
    Acknowledgement Size sets when `take_acknowledgement()` is due); they are
    returned too. Aggregate messages come out as their sub-messages.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_chunk_streams = max_chunk_streams
        self.window_ack_size = window_ack_size
        self.chunk_size = messages.DEFAULT_CHUNK_SIZE
        self.bytes_received = 0  # total since the handshake, for acknowledgements
        self._acked_at = 0
        self._buf = bytearray()
        self._pos = 0
        self._streams: dict[int, _InStream] = {}
        self._current: _InStream | None = None  # stream whose chunk payload is being read
        self._chunk_left = 0  # payload bytes of the current chunk not read yet
        self._partial_bytes = 0  # bytes held in partial messages, all chunk streams
        self._pending: collections.deque[Message] = collections.deque()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: unparsed input plus partial messages."""
        return len(self._buf) - self._pos + self._partial_bytes

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self.bytes_received += len(data)
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def take_acknowledgement(self) -> int | None:
        """The sequence number to acknowledge if a window's worth arrived since the last."""
        if self.window_ack_size <= 0:
            return None
        if self.bytes_received - self._acked_at < self.window_ack_size:
            return None
        self._acked_at = self.bytes_received
        return self.bytes_received & 0xFFFFFFFF

    def next_message(self) -> Message | None:
        """The next complete message, or None when more bytes are needed."""
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._current is None:
                if not self._read_header():
                    return None
                stream = self._current
                assert stream is not None
                if stream.length == 0:  # a zero-length message has no chunk payload
                    message = self._complete(stream)
                    if message is not None:
                        return message
                continue
            stream = self._current
            available = len(self._buf) - self._pos
            if available == 0:
                return None
            take = min(self._chunk_left, available)
            assert stream.partial is not None
            stream.partial += self._buf[self._pos : self._pos + take]
            self._pos += take
            self._chunk_left -= take
            self._partial_bytes += take
            if self._partial_bytes > self.max_message_bytes:
                raise ProtocolError(
                    f"partial messages exceed the limit of {self.max_message_bytes} bytes"
                )
            if self._chunk_left == 0:
                self._current = None
                if len(stream.partial) == stream.length:
                    message = self._complete(stream)
                    if message is not None:
                        return message

    def _read_header(self) -> bool:
        """Parse one chunk header if all of it is buffered; False if more bytes are needed."""
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 1:
            return False
        fmt = buf[pos] >> 6
        csid = buf[pos] & 0x3F
        size = 1
        if csid == 0:
            if available < 2:
                return False
            csid = 64 + buf[pos + 1]
            size = 2
        elif csid == 1:
            if available < 3:
                return False
            csid = 64 + buf[pos + 1] + (buf[pos + 2] << 8)
            size = 3
        header_size = size + _HEADER_SIZES[fmt]
        if available < header_size:
            return False
        stream = self._streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise ProtocolError(f"chunk stream {csid} starts with a type {fmt} header")
            if len(self._streams) >= self.max_chunk_streams:
                raise ProtocolError(f"more than {self.max_chunk_streams} chunk streams")
            stream = _InStream()
            self._streams[csid] = stream
        starts_message = stream.partial is None
        if fmt != 3 and not starts_message:
            raise ProtocolError(
                f"type {fmt} header on chunk stream {csid} while a message is incomplete"
            )
        field = 0
        if fmt <= 2:
            field = (buf[pos + size] << 16) | (buf[pos + size + 1] << 8) | buf[pos + size + 2]
            extended = field == EXTENDED
        else:
            extended = stream.extended
        ext_taken = False
        if extended:
            if available < header_size + 4:
                return False
            ext_value = _U32.unpack_from(buf, pos + header_size)[0]
            # Continuation chunks: take the 4 bytes only if they repeat the timestamp.
            if starts_message or ext_value in (stream.ts_field, stream.timestamp):
                field = ext_value
                header_size += 4
                ext_taken = True
        if fmt <= 1:
            at = pos + size + 3
            length = (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2]
            if length > self.max_message_bytes:
                raise ProtocolError(
                    f"message length {length} exceeds the limit of {self.max_message_bytes}"
                )
            stream.length = length
            stream.type_id = buf[at + 3]
            if fmt == 0:
                stream.stream_id = _U32LE.unpack_from(buf, at + 4)[0]
        if fmt == 0:
            stream.timestamp = field
        elif fmt <= 2:
            stream.timestamp = (stream.timestamp + field) & 0xFFFFFFFF
        elif starts_message:
            delta = field if ext_taken else stream.ts_field
            stream.timestamp = (stream.timestamp + delta) & 0xFFFFFFFF
        if fmt <= 2:
            stream.ts_field = field
            stream.extended = extended
        self._pos = pos + header_size
        if starts_message:
            stream.partial = bytearray()
        assert stream.partial is not None
        self._chunk_left = min(self.chunk_size, stream.length - len(stream.partial))
        self._current = stream
        return True

    def _complete(self, stream: _InStream) -> Message | None:
        """Finish `stream`'s message; apply protocol control; None if it yielded nothing."""
        assert stream.partial is not None
        payload = bytes(stream.partial)
        stream.partial = None
        self._current = None
        self._partial_bytes -= len(payload)
        message = Message(stream.type_id, stream.stream_id, stream.timestamp, payload)
        if message.type_id == messages.SET_CHUNK_SIZE:
            self.chunk_size = messages.parse_chunk_size(payload)
        elif message.type_id == messages.ABORT:
            self._abort(messages.parse_u32(payload, "abort"))
        elif message.type_id == messages.WINDOW_ACK_SIZE:
            size = messages.parse_u32(payload, "window acknowledgement size")
            if size > 0:
                self.window_ack_size = size
        elif message.type_id == messages.AGGREGATE:
            self._pending.extend(split_aggregate(message))
            return None
        return message

    def _abort(self, csid: int) -> None:
        stream = self._streams.get(csid)
        if stream is not None and stream.partial is not None:
            self._partial_bytes -= len(stream.partial)
            stream.partial = None


_AGGREGATED_TYPES = frozenset({messages.AUDIO, messages.VIDEO, messages.DATA_AMF0})


def split_aggregate(message: Message) -> list[Message]:
    """The audio/video/data sub-messages of an Aggregate message.

    Each sub-message is an FLV-tag-like unit (11-byte header, body, 4-byte back
    pointer); its timestamp is the aggregate's plus its offset from the first.
    """
    payload = message.payload
    out: list[Message] = []
    pos = 0
    first: int | None = None
    while pos < len(payload):
        if len(payload) - pos < 11:
            raise ProtocolError("truncated aggregate sub-message header")
        type_id = payload[pos] & 0x1F
        size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
        body_at = pos + 11
        if body_at + size > len(payload):
            raise ProtocolError("truncated aggregate sub-message body")
        if first is None:
            first = timestamp
        if type_id in _AGGREGATED_TYPES:
            out.append(
                Message(
                    type_id,
                    message.stream_id,
                    (message.timestamp + timestamp - first) & 0xFFFFFFFF,
                    bytes(payload[body_at : body_at + size]),
                )
            )
        pos = body_at + size
        remaining = len(payload) - pos
        if remaining >= 4:
            pos += 4  # back pointer
        elif remaining:
            raise ProtocolError("truncated aggregate back pointer")
    return out


class _OutStream:
    __slots__ = (
        "delta_mode",
        "extended",
        "length",
        "stream_id",
        "timestamp",
        "ts_field",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.ts_field = 0
        self.delta_mode = False  # the last header carried a delta (type 1/2)
        self.extended = False
        self.length = 0
        self.type_id = 0
        self.stream_id = 0


def basic_header(fmt: int, csid: int) -> bytes:
    """The 1-3 byte basic header for chunk stream id `csid`."""
    if csid < 2 or csid > MAX_CHUNK_STREAM_ID:
        raise ValueError(f"chunk stream id {csid} out of range 2..{MAX_CHUNK_STREAM_ID}")
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    rest = csid - 64
    return bytes([(fmt << 6) | 1, rest & 0xFF, rest >> 8])


class ChunkWriter:
    """Splits messages into chunks. Header compression is only ever against the
    previous header of the SAME chunk stream, and a type 3 header starts a new
    message only after a type 1/2 header (so no reader has to guess)."""

    def __init__(self, chunk_size: int = messages.DEFAULT_CHUNK_SIZE) -> None:
        if not 1 <= chunk_size <= messages.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} out of range")
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}

    def set_chunk_size(self, size: int, csid: int = messages.CONTROL_CHUNK_STREAM) -> bytes:
        """The Set Chunk Size message (sent at the old size); later writes use `size`."""
        data = self.write(csid, messages.set_chunk_size(size))
        self.chunk_size = size
        return data

    def write(self, csid: int, message: Message) -> bytes:
        """The chunks of `message` on chunk stream `csid`."""
        length = len(message.payload)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes does not fit RTMP's 24-bit length")
        timestamp = message.timestamp & 0xFFFFFFFF
        stream = self._streams.get(csid)
        delta = 0 if stream is None else (timestamp - stream.timestamp) & 0xFFFFFFFF
        if stream is None or message.stream_id != stream.stream_id or delta >= 0x80000000:
            fmt, field = 0, timestamp
        elif length != stream.length or message.type_id != stream.type_id:
            fmt, field = 1, delta
        elif stream.delta_mode and delta == stream.ts_field:
            fmt, field = 3, delta
        else:
            fmt, field = 2, delta
        if stream is None:
            stream = self._streams[csid] = _OutStream()
        extended = field >= EXTENDED if fmt != 3 else stream.extended
        out = bytearray(basic_header(fmt, csid))
        if fmt <= 2:
            out += min(field, EXTENDED).to_bytes(3, "big")
        if fmt <= 1:
            out += length.to_bytes(3, "big")
            out.append(message.type_id)
        if fmt == 0:
            out += _U32LE.pack(message.stream_id)
        ext = _U32.pack(field) if extended else b""
        out += ext
        continuation = basic_header(3, csid) + ext
        payload = message.payload
        out += payload[: self.chunk_size]
        for at in range(self.chunk_size, length, self.chunk_size):
            out += continuation
            out += payload[at : at + self.chunk_size]
        stream.timestamp = timestamp
        stream.length = length
        stream.type_id = message.type_id
        stream.stream_id = message.stream_id
        if fmt != 3:
            stream.ts_field = field
            stream.extended = extended
            stream.delta_mode = fmt != 0
        return bytes(out)
