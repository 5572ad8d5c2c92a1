"""The master and DVR master playlists: what they list, and when they are rewritten.

Both appear once every rendition's live and DVR playlists are stored; they are
rewritten when their shape changes, when a rendition's `BANDWIDTH` grows (players must
never meet a segment above it) or its `AVERAGE-BANDWIDTH` moves by more than
`MASTER_REWRITE_CHANGE`, and when the live ends: the master then leads to the whole
recording (`event.m3u8`, so only once every rendition's is stored), the DVR master to
the DVR window. Not thread-safe: the writer calls it with its lock held.
"""

from __future__ import annotations

from collections.abc import Iterable

from packager import layout
from packager.hls.items import PlaylistSlot
from packager.hls.renditions import RenditionState
from packager.playlist import VariantStream, master_playlist

MASTER_REWRITE_CHANGE = 0.10


class Masters:
    """The two master playlists of one writer."""

    def __init__(self, prefix: str) -> None:
        self.master = PlaylistSlot(layout.master_key(prefix), "master")
        self.dvr_master = PlaylistSlot(layout.dvr_master_key(prefix), "dvr-master")
        self._rendered: tuple[VariantStream, ...] = ()
        self._rendered_ended = False

    @property
    def slots(self) -> tuple[PlaylistSlot, PlaylistSlot]:
        return (self.master, self.dvr_master)

    def update(self, renditions: Iterable[RenditionState], *, ended: bool) -> list[PlaylistSlot]:
        """The masters to rewrite now (none, or both)."""
        wanted = _variants(list(renditions), ended=ended)
        if not wanted:
            return []
        rendered = self._rendered
        if (
            [v.info.name for v in wanted] != [v.info.name for v in rendered]
            or (ended and not self._rendered_ended)
            or any(_moved(new, old) for new, old in zip(wanted, rendered, strict=True))
        ):
            self._rendered = wanted
            self._rendered_ended = ended
            return [self.master, self.dvr_master]
        return []

    def render(self, slot: PlaylistSlot) -> str:
        if slot.kind == "dvr-master":
            media = layout.DVR_PLAYLIST_NAME
        elif self._rendered_ended:
            media = layout.EVENT_PLAYLIST_NAME  # once the live ended: the whole recording
        else:
            media = layout.LIVE_PLAYLIST_NAME
        return master_playlist(self._rendered, media)


def _variants(states: list[RenditionState], *, ended: bool) -> tuple[VariantStream, ...]:
    """What the masters would list now: every rendition once each is ready; once the
    live ended, every rendition that listed something, once each of those is ready."""
    if ended:
        states = [s for s in states if s.recording.count]
    if not states or not all(s.ready(ended=ended) for s in states):
        return ()
    return tuple(
        VariantStream(s.info, s.meter.peak_bps, s.meter.average_bps, s.ceiling_bps) for s in states
    )


def _moved(new: VariantStream, old: VariantStream) -> bool:
    """Whether the master must be rewritten for this variant: BANDWIDTH grew, or
    AVERAGE-BANDWIDTH moved noticeably."""
    if new.bandwidth_bps > old.bandwidth_bps:
        return True
    now, then = new.average_bandwidth_bps, old.average_bandwidth_bps
    if now is None or then is None:
        return now != then
    return abs(now - then) > MASTER_REWRITE_CHANGE * then
