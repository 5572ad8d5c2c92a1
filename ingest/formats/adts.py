"""ADTS, the framing of AAC in MPEG-TS (and in HLS segments), as pure functions.

An MPEG-TS demuxer gives one AAC frame per packet, ADTS header included, but only
the first frame of each PES carries a timestamp; the header says how many samples
the frame holds and at which rate, which is what the missing timestamps are made of.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_SIZE = 7  # without CRC; 9 with it
SAMPLES_PER_BLOCK = 1024

_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 8)


@dataclass(frozen=True)
class AdtsHeader:
    sample_rate: int
    channels: int  # 0: given by a program config element, not by the header
    samples: int  # per frame: 1024 x the raw data blocks
    frame_bytes: int  # header included


def parse_header(data: bytes) -> AdtsHeader | None:
    """The ADTS header at the start of `data`, or None if there is none there."""
    if len(data) < HEADER_SIZE or data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
        return None  # no syncword, or layer bits not 0
    rate_index = (data[2] >> 2) & 0x0F
    if rate_index >= len(_RATES):
        return None
    channel_config = ((data[2] & 0x01) << 2) | (data[3] >> 6)
    frame_bytes = ((data[3] & 0x03) << 11) | (data[4] << 3) | (data[5] >> 5)
    if frame_bytes < HEADER_SIZE:
        return None
    blocks = (data[6] & 0x03) + 1
    return AdtsHeader(
        _RATES[rate_index], _CHANNELS[channel_config], blocks * SAMPLES_PER_BLOCK, frame_bytes
    )
