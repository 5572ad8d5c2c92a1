"""Measured bit rates of a rendition, for the master playlist's BANDWIDTH attributes."""

from __future__ import annotations

import math

from media.segments import VariantInfo

TS_PACKET_BYTES = 188
TS_PAYLOAD_BYTES = 184
AUDIO_FRAMES_PER_SECOND = 48_000 / 1024  # AAC at 48 kHz: the most audio PES per second
DEFAULT_FRAME_RATE = 30.0
PSI_PACKETS_PER_SEGMENT = 3  # PAT, PMT, SDT


def ts_ceiling_bps(info: VariantInfo, segment_seconds: float) -> int | None:
    """The most a rendition can weigh in MPEG-TS: its encoder's cap (`max_bitrate_bps`,
    video maxrate + audio) packetized into 188-byte packets, plus, per PES (one per
    video frame, at most one per AAC frame), a PES header and its last packet's
    stuffing (bounded by one packet), plus the PAT/PMT/SDT of each segment.

    None for a copy (no cap is known: the measured peak is all there is).
    """
    if info.max_bitrate_bps is None:
        return None
    frame_rate = info.frame_rate or DEFAULT_FRAME_RATE
    pes_per_second = frame_rate + AUDIO_FRAMES_PER_SECOND
    packetized = info.max_bitrate_bps * TS_PACKET_BYTES / TS_PAYLOAD_BYTES
    per_pes = pes_per_second * TS_PACKET_BYTES * 8
    psi = PSI_PACKETS_PER_SEGMENT * TS_PACKET_BYTES * 8 / max(segment_seconds, 0.001)
    return math.ceil(packetized + per_pes + psi)


class BandwidthMeter:
    """Peak and average segment bit rate over the segments published so far.

    RFC 8216 4.3.4.2: BANDWIDTH is the peak segment bit rate, AVERAGE-BANDWIDTH the
    average. Segments shorter than half the configured segment length (the last one
    of a live, the one before a reconnect) are left out of the peak while a full-length
    one exists: a lone keyframe over a fraction of a second would otherwise inflate
    BANDWIDTH and make players avoid the variant. They still count in the average.
    """

    def __init__(self, segment_seconds: float) -> None:
        self._min_peak_seconds = segment_seconds / 2
        self.segments = 0
        self.seconds = 0.0
        self.size_bytes = 0
        self._peak_full_bps: float | None = None
        self._peak_short_bps: float | None = None

    def add(self, size_bytes: int, duration_seconds: float) -> None:
        self.segments += 1
        self.size_bytes += size_bytes
        self.seconds += duration_seconds
        if duration_seconds <= 0:
            return
        bps = size_bytes * 8 / duration_seconds
        if duration_seconds >= self._min_peak_seconds:
            self._peak_full_bps = max(self._peak_full_bps or 0.0, bps)
        else:
            self._peak_short_bps = max(self._peak_short_bps or 0.0, bps)

    @property
    def peak_bps(self) -> int | None:
        peak = self._peak_full_bps if self._peak_full_bps is not None else self._peak_short_bps
        return None if peak is None else math.ceil(peak)

    @property
    def average_bps(self) -> int | None:
        if self.seconds <= 0:
            return None
        return math.ceil(self.size_bytes * 8 / self.seconds)
