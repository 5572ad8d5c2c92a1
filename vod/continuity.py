"""Continuity counters of a re-encoded edge segment, fitted to its copied neighbours
(pure functions over TS bytes, `packager.continuity`'s packet view).

A copied segment keeps its stored bytes, counters included. The re-encoded first
segment of a video must therefore *end* where the live's segment it replaces ended
(the next, copied segment goes on from there), and the re-encoded last segment must
*start* where the live's segment it replaces started (it goes on from the previous,
copied one). ISO/IEC 13818-1 2.4.3.3: a PID's counter increments on each packet with
a payload and stays on adaptation-field-only packets.
"""

from __future__ import annotations

import numpy as np

from packager.continuity import (
    DISCONTINUITY_INDICATOR,
    NULL_PID,
    TS_PACKET_BYTES,
    TsFormatError,
)

__all__ = ["TsFormatError", "counters_after", "counters_before", "fit_counters"]


def _view(data: bytes) -> np.ndarray:
    if len(data) % TS_PACKET_BYTES:
        raise TsFormatError(f"{len(data)} bytes is not a whole number of TS packets")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, TS_PACKET_BYTES).copy()


def _pids(packets: np.ndarray) -> np.ndarray:
    return ((packets[:, 1].astype(np.int32) & 0x1F) << 8) | packets[:, 2]


def _payload(packets: np.ndarray) -> np.ndarray:
    return ((packets[:, 3] >> 4) & 1).astype(np.int64)


def counters_after(data: bytes) -> dict[int, int]:
    """Per PID, the counter of its last packet in `data` (where the next segment goes on)."""
    packets = _view(data)
    pids = _pids(packets)
    last: dict[int, int] = {}
    for pid in np.unique(pids):
        if int(pid) != NULL_PID:
            rows = np.flatnonzero(pids == pid)
            last[int(pid)] = int(packets[rows[-1], 3] & 0x0F)
    return last


def counters_before(data: bytes) -> dict[int, int]:
    """Per PID, the counter the packet before `data`'s first one had (the previous
    segment's last)."""
    packets = _view(data)
    pids = _pids(packets)
    payload = _payload(packets)
    before: dict[int, int] = {}
    for pid in np.unique(pids):
        if int(pid) != NULL_PID:
            row = int(np.flatnonzero(pids == pid)[0])
            before[int(pid)] = (int(packets[row, 3] & 0x0F) - int(payload[row])) & 0x0F
    return before


def fit_counters(
    data: bytes,
    *,
    after: dict[int, int] | None = None,
    ending: dict[int, int] | None = None,
    keep_indicators: bool = False,
) -> bytes:
    """`data` with each PID's counters going on from `after[pid]` (the previous packet's
    counter), or else ending on `ending[pid]`; PIDs in neither keep theirs. Unless
    `keep_indicators`, discontinuity indicators are cleared (the seam is seamless)."""
    packets = _view(data)
    if not len(packets):
        return data
    if not keep_indicators:
        has_field = (packets[:, 3] & 0x20) != 0
        mask = has_field & (packets[:, 4] > 0) & ((packets[:, 5] & DISCONTINUITY_INDICATOR) != 0)
        packets[mask, 5] &= 0xFF ^ DISCONTINUITY_INDICATOR
    pids = _pids(packets)
    payload = _payload(packets)
    for pid in np.unique(pids):
        pid = int(pid)
        rows = np.flatnonzero(pids == pid)
        steps = np.cumsum(payload[rows])
        if after is not None and pid in after:
            counters = (after[pid] + steps) & 0x0F
        elif ending is not None and pid in ending:
            counters = (ending[pid] - int(steps[-1]) + steps) & 0x0F
        else:
            continue
        packets[rows, 3] = (packets[rows, 3] & 0xF0) | counters.astype(np.uint8)
    return packets.tobytes()
