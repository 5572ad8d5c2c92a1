"""MPEG-TS continuity across the segments of a rendition (pure functions over bytes).

Each segment is muxed by a muxer of its own, so its continuity counters start at 0:
a player reading segment after segment would see a counter break on every PID at
every join (ffmpeg's `Packet corrupt`, VLC's `TS discontinuity`). A broadcast
packager's counters run on across segments; `ContinuityCounters` rewrites each
segment's counters to continue from where the previous segment of the rendition
left them (ISO/IEC 13818-1 2.4.3.3: a PID's counter increments on each packet with
a payload, and stays on adaptation-field-only packets).

The segmenter muxes every segment with `mpegts_flags=initial_discontinuity`, so
the first packet of each PID carries an adaptation field with the
`discontinuity_indicator` set. Where the segment really starts a new run (a
publisher reconnect, a new pipeline continuing a recording: the playlist says
`EXT-X-DISCONTINUITY`) the indicators stay; everywhere else they are cleared,
leaving a one-byte adaptation field with no flag (a valid, two-byte cost per PID
and segment).
"""

from __future__ import annotations

import numpy as np

TS_PACKET_BYTES = 188
SYNC_BYTE = 0x47
NULL_PID = 0x1FFF
DISCONTINUITY_INDICATOR = 0x80


class TsFormatError(ValueError):
    """The bytes are not a whole number of MPEG-TS packets."""


def _packets(data: bytes) -> np.ndarray:
    """A writable (n, 188) view of `data`'s packets (a copy of the bytes)."""
    if len(data) % TS_PACKET_BYTES:
        raise TsFormatError(f"{len(data)} bytes is not a whole number of TS packets")
    packets = np.frombuffer(data, dtype=np.uint8).reshape(-1, TS_PACKET_BYTES).copy()
    if packets.size and not np.all(packets[:, 0] == SYNC_BYTE):
        raise TsFormatError("a TS packet does not start with the sync byte")
    return packets


def _pids(packets: np.ndarray) -> np.ndarray:
    return ((packets[:, 1].astype(np.int32) & 0x1F) << 8) | packets[:, 2]


def _discontinuity_mask(packets: np.ndarray) -> np.ndarray:
    """Packets whose adaptation field (present, length > 0) has the indicator set."""
    has_field = (packets[:, 3] & 0x20) != 0
    return has_field & (packets[:, 4] > 0) & ((packets[:, 5] & DISCONTINUITY_INDICATOR) != 0)


def clear_discontinuity(data: bytes) -> bytes:
    """`data` with every discontinuity indicator cleared."""
    packets = _packets(data)
    mask = _discontinuity_mask(packets)
    if not mask.any():
        return data
    packets[mask, 5] &= 0xFF ^ DISCONTINUITY_INDICATOR
    return packets.tobytes()


def discontinuity_pids(data: bytes) -> set[int]:
    """The PIDs with a packet carrying the discontinuity indicator."""
    packets = _packets(data)
    return {int(pid) for pid in _pids(packets)[_discontinuity_mask(packets)]}


class ContinuityCounters:
    """The continuity counters of one rendition's TS stream, carried across segments.

    Segments must be passed in stream order, from one thread.
    """

    def __init__(self) -> None:
        self._last: dict[int, int] = {}  # PID -> counter of its last packet

    def carry(self, data: bytes, *, keep_indicators: bool = False) -> bytes:
        """The segment with its counters continued from the previous segment (the
        first keeps its own) and, unless `keep_indicators`, its discontinuity
        indicators cleared. Counters run on even where the indicators stay: a
        discontinuity is the indicator's to announce, never a counter break."""
        packets = _packets(data)
        if not len(packets):
            return data
        if not keep_indicators:
            mask = _discontinuity_mask(packets)
            packets[mask, 5] &= 0xFF ^ DISCONTINUITY_INDICATOR
        pids = _pids(packets)
        has_payload = ((packets[:, 3] >> 4) & 1).astype(np.int64)
        for pid in np.unique(pids):
            pid = int(pid)
            if pid == NULL_PID:
                continue
            rows = np.flatnonzero(pids == pid)
            previous = self._last.get(pid)
            if previous is None:
                # The first segment, or a PID new in this one: its counters start a run.
                self._last[pid] = int(packets[rows[-1], 3] & 0x0F)
                continue
            counters = (previous + np.cumsum(has_payload[rows])) & 0x0F
            packets[rows, 3] = (packets[rows, 3] & 0xF0) | counters.astype(np.uint8)
            self._last[pid] = int(counters[-1])
        return packets.tobytes()
