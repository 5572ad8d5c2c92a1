"""The published state of one rendition: what it lists, what is on its way, its counters.

A `RenditionState` holds, for one rendition of the HLS writer:

- its `Recording` (what its playlists list, `packager.hls.recording`) and the slots of
  those playlists (live, DVR, the parts being written, the whole-live playlist);
- the segments spooled and not yet listed (`added`, in order): the listing grows only
  through the contiguous prefix of stored ones (`advance`), so a playlist never lists
  an object that is not stored;
- its MPEG-TS continuity counters, carried across its segments (`packager.continuity`),
  and the bandwidth meter its master entry is made from;
- where its numbers start (`offset`: segments earlier writers of the prefix stored).

Not thread-safe: the writer calls it with its lock held.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from media.segments import Segment, VariantInfo
from packager import layout
from packager.bandwidth import BandwidthMeter, ts_ceiling_bps
from packager.continuity import ContinuityCounters, TsFormatError
from packager.hls.items import PlaylistSlot, Upload
from packager.hls.recording import Recording
from packager.playlist import ListedSegment

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class RenditionState:
    """One rendition of an HLS writer (see the module docstring)."""

    info: VariantInfo
    prefix: str
    recording: Recording
    meter: BandwidthMeter
    live: PlaylistSlot
    dvr: PlaylistSlot
    event: PlaylistSlot
    ceiling_bps: int | None = None  # the most the rendition can weigh (BANDWIDTH floor)
    counters: ContinuityCounters = field(default_factory=ContinuityCounters)
    parts: dict[int, PlaylistSlot] = field(default_factory=dict)  # parts with writes to do
    added: deque[Upload] = field(default_factory=deque)  # spooled, not yet listed
    last_sequence: int | None = None
    discontinuity_pending: bool = False  # a lost segment left a gap before the next one
    offset: int = 0  # added to the encoder's sequence numbers: segments stored before
    earlier_seconds: float = 0.0  # listed by earlier writers of the prefix
    continues_history: bool = False  # earlier writers listed segments: a new run
    run_started: bool = False  # a segment went through add_segment

    @classmethod
    def create(
        cls,
        info: VariantInfo,
        prefix: str,
        segment_seconds: float,
        recording: Recording,
    ) -> RenditionState:
        name = info.name
        return cls(
            info=info,
            prefix=prefix,
            recording=recording,
            meter=BandwidthMeter(segment_seconds),
            live=PlaylistSlot(layout.live_playlist_key(prefix, name), "live", name),
            dvr=PlaylistSlot(layout.dvr_playlist_key(prefix, name), "dvr", name),
            event=PlaylistSlot(layout.event_playlist_key(prefix, name), "event", name),
            ceiling_bps=ts_ceiling_bps(info, segment_seconds),
        )

    @property
    def name(self) -> str:
        return self.info.name

    def number(self, upload: Upload) -> int:
        """The segment's number in the recording (its name, its media sequence)."""
        return upload.number if upload.number is not None else self.offset + upload.sequence

    def part_slot(self, index: int) -> PlaylistSlot:
        slot = self.parts.get(index)
        if slot is None:
            key = layout.part_playlist_key(self.prefix, self.name, index)
            slot = self.parts[index] = PlaylistSlot(key, "part", self.name, part=index)
        return slot

    def upload_of(self, segment: Segment, log_prefix: str = "") -> tuple[Upload, bytes]:
        """The upload of a new segment, and its bytes with the rendition's continuity
        counters carried on (from the encoder's thread: segments of a rendition arrive
        in order, one at a time; the indicators stay where a run starts)."""
        opens_run = not self.run_started
        self.run_started = True
        try:
            data = self.counters.carry(
                segment.data, keep_indicators=opens_run or segment.discontinuity
            )
        except TsFormatError as error:
            logger.warning(
                "%s segment %s/%d: %s; stored as given",
                log_prefix,
                segment.rendition,
                segment.sequence,
                error,
            )
            data = segment.data
        upload = Upload(
            rendition=segment.rendition,
            sequence=segment.sequence,
            duration_seconds=segment.duration_seconds,
            discontinuity=segment.discontinuity,
            size_bytes=len(data),
            spool_path=None,
            arrived_at=segment.arrived_at,
            opens_run=opens_run and not segment.discontinuity,
        )
        return upload, data

    def pending_count(self) -> int:
        return sum(1 for u in self.added if not u.stored and not u.lost)

    def advance(self) -> list[PlaylistSlot] | None:
        """List the contiguous prefix of stored segments; the playlists that must be
        rewritten for it (None: nothing new is listed)."""
        slots: list[PlaylistSlot] = []
        advanced = False
        while self.added and (self.added[0].stored or self.added[0].lost):
            upload = self.added.popleft()
            if upload.lost:
                self.discontinuity_pending = True
                continue
            listed = ListedSegment(
                self.number(upload),
                upload.duration_seconds,
                upload.discontinuity or self.discontinuity_pending,
                upload.arrived_at,
            )
            self.discontinuity_pending = False
            completed = self.recording.append(listed)
            if completed is not None:
                slots.append(self.part_slot(completed))  # its last write: EXT-X-ENDLIST
            self.meter.add(upload.size_bytes, upload.duration_seconds)
            advanced = True
        if not advanced:
            return None
        return [*slots, self.live, self.dvr, self.part_slot(self.recording.current_part)]

    def final_slots(self) -> list[PlaylistSlot]:
        """What the end of the live rewrites (with EXT-X-ENDLIST): nothing if nothing is
        listed."""
        if not self.recording.count:
            return []
        return [self.live, self.dvr, self.part_slot(self.recording.current_part), self.event]

    def every_part(self) -> list[PlaylistSlot]:
        """Every part of the recording: written again where they may be missing (a
        recording read from a whole-live playlist, or a leftover's)."""
        return [self.part_slot(index) for index in range(len(self.recording.parts))]

    def ready(self, *, ended: bool) -> bool:
        """Whether the masters may lead to it: its live and DVR playlists are stored, and
        once the live ended its whole-live playlist too."""
        return self.live.written and self.dvr.written and (self.event.written or not ended)

    def render(self, slot: PlaylistSlot, *, ended: bool) -> str:
        recording = self.recording
        if slot.kind == "live":
            return recording.render_live(ended=ended)
        if slot.kind == "dvr":
            return recording.render_dvr(ended=ended)
        if slot.kind == "part":
            return recording.render_part(slot.part, ended=ended)
        return recording.render_event(ended=ended)

    def written(self, slot: PlaylistSlot) -> None:
        """A part that will never change again is forgotten once written."""
        if (
            slot.kind == "part"
            and slot.part < self.recording.current_part
            and not (slot.dirty or slot.queued or slot.in_flight)
        ):
            self.parts.pop(slot.part, None)

    def part_complete(self, slot: PlaylistSlot) -> bool:
        return slot.kind == "part" and slot.part < self.recording.current_part
