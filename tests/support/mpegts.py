"""MPEG-TS continuity across HLS segments, checked the way a demuxer sees it (pure functions).

Written for the tests on purpose, apart from the packager's code: it reads the
bytes a player downloads. ISO/IEC 13818-1 2.4.3.3: a PID's 4-bit
`continuity_counter` increments on every packet that carries a payload
(adaptation_field_control 01 or 11) and stays the same on adaptation-only packets
(10); a break is allowed only where a packet carries the `discontinuity_indicator`
(adaptation field present, length > 0, flag 0x80). A player that reads segment after
segment sees one stream, so at every join the counters must go on from the previous
segment, except where the playlist says `EXT-X-DISCONTINUITY`; there, and only
there, the first packet of each PID carries the indicator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

TS_PACKET_BYTES = 188
SYNC_BYTE = 0x47
NULL_PID = 0x1FFF
DISCONTINUITY_INDICATOR = 0x80
MAX_LISTED = 12  # problems quoted per kind in a report; the counts are complete


@dataclass(frozen=True)
class TsPacket:
    """The header fields of one 188-byte packet that continuity depends on."""

    pid: int
    continuity_counter: int
    has_payload: bool
    discontinuity_indicator: bool


@dataclass(frozen=True)
class Segment:
    """One downloaded segment, and whether the playlist puts a discontinuity before it."""

    name: str
    data: bytes = field(repr=False)
    discontinuity: bool = False


@dataclass(repr=False)
class ContinuityReport:
    """What a demuxer reading the segments in order would complain about."""

    pids: set[int] = field(default_factory=set)
    packets: int = 0
    breaks: list[str] = field(default_factory=list)  # a counter that does not go on
    missing_indicators: list[str] = field(default_factory=list)  # at a playlist discontinuity
    stray_indicators: list[str] = field(default_factory=list)  # anywhere else
    playlist_discontinuities: list[str] = field(default_factory=list)  # segment names
    indicator_segments: list[str] = field(default_factory=list)  # segments carrying any

    @property
    def ok(self) -> bool:
        return not (self.breaks or self.missing_indicators or self.stray_indicators)

    def summary(self) -> str:
        def quoted(name: str, items: list[str]) -> str:
            shown = "\n    ".join(items[:MAX_LISTED])
            more = f"\n    ... {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
            return f"  {name}: {len(items)}" + (f"\n    {shown}{more}" if items else "")

        return "\n".join(
            [
                f"  {self.packets} packets, PIDs {sorted(f'0x{p:04x}' for p in self.pids)}",
                f"  playlist discontinuities before: {self.playlist_discontinuities}",
                f"  segments carrying discontinuity_indicator: {self.indicator_segments}",
                quoted("continuity counter breaks", self.breaks),
                quoted("missing indicators at playlist discontinuities", self.missing_indicators),
                quoted("indicators where the playlist has no discontinuity", self.stray_indicators),
            ]
        )


def parse_packets(data: bytes) -> list[TsPacket]:
    """Every packet of `data`; ValueError if it is not whole, synced 188-byte packets."""
    if len(data) % TS_PACKET_BYTES:
        raise ValueError(f"{len(data)} bytes is not a whole number of TS packets")
    packets = []
    for offset in range(0, len(data), TS_PACKET_BYTES):
        header = data[offset : offset + 6]
        if header[0] != SYNC_BYTE:
            raise ValueError(f"packet at byte {offset} does not start with 0x47")
        control = (header[3] >> 4) & 0b11
        has_adaptation = bool(control & 0b10)
        indicator = has_adaptation and header[4] > 0 and bool(header[5] & DISCONTINUITY_INDICATOR)
        packets.append(
            TsPacket(
                pid=((header[1] & 0x1F) << 8) | header[2],
                continuity_counter=header[3] & 0x0F,
                has_payload=bool(control & 0b01),
                discontinuity_indicator=indicator,
            )
        )
    return packets


def check_continuity(segments: Sequence[Segment]) -> ContinuityReport:
    """Read `segments` in playlist order as one stream and report every continuity fault."""
    report = ContinuityReport()
    last: dict[int, tuple[int, str]] = {}  # pid -> (counter of its last packet, segment)
    for segment in segments:
        if segment.discontinuity:
            report.playlist_discontinuities.append(segment.name)
        seen_here: set[int] = set()
        carries_indicator = False
        for index, packet in enumerate(parse_packets(segment.data)):
            report.packets += 1
            if packet.pid == NULL_PID:
                continue  # null packets have no defined counter
            report.pids.add(packet.pid)
            where = f"{segment.name} packet {index} pid 0x{packet.pid:04x}"
            first_here = packet.pid not in seen_here
            seen_here.add(packet.pid)
            carries_indicator |= packet.discontinuity_indicator
            if segment.discontinuity and first_here:
                if not packet.discontinuity_indicator:
                    report.missing_indicators.append(where)
            elif packet.discontinuity_indicator:
                report.stray_indicators.append(where)
            previous = last.get(packet.pid)
            if previous is not None and not packet.discontinuity_indicator:
                counter, previous_segment = previous
                expected = (counter + 1) % 16 if packet.has_payload else counter
                if packet.continuity_counter != expected:
                    join = f" (previous packet in {previous_segment})" if first_here else ""
                    report.breaks.append(
                        f"{where}: counter {packet.continuity_counter}, expected {expected}{join}"
                    )
            last[packet.pid] = (packet.continuity_counter, segment.name)
        if carries_indicator:
            report.indicator_segments.append(segment.name)
    return report
