"""The FLV byte stream of one RTMP publish session, as PyAV's FLV demuxer reads it.

An RTMP audio/video message body is an FLV tag body, so the stream is
`flv.file_header()` then one `flv.tag()` per message, written into the session's
`ByteFeed`. Two things make it work live:

- PyAV only knows the streams it saw while opening (its demuxer reads about two
  packets then; a stream that appears later is lost and breaks the end of
  `demux()`). So the start is held back ("priming") until both an audio and a video
  tag arrived, metadata says which kinds exist, or PRIME_WAIT_MS of media passed;
  then the header, the metadata and the held tags are written, the first tag of each
  kind first. Tags of a kind that was not there at the start are ignored.
- Over the feed's byte cap, whole tags are lost (`flv.LiveTagDropper`).

Runs on the event loop; never blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingest.feed import ByteFeed
from ingest.formats import flv

logger = logging.getLogger(__name__)

PRIME_WAIT_MS = 1000


@dataclass(frozen=True)
class _Held:
    kind: int
    timestamp_ms: int
    payload: bytes
    arrived: float | None


class FlvSessionWriter:
    """Writes one session's RTMP messages into its feed as an FLV stream."""

    def __init__(self, feed: ByteFeed, *, label: str = "") -> None:
        self.feed = feed
        self.prefix = f"[flv {label}]" if label else "[flv]"
        self.primed = False
        self.kinds: frozenset[int] = frozenset()  # the tag kinds of the stream, once primed
        self.metadata: dict[str, Any] | None = None
        self.audio_config: flv.AudioTagInfo | None = None  # the AAC config, truer than flags
        self.ignored_tags = 0
        self._held: list[_Held] = []
        self._held_bytes = 0
        self._held_span: tuple[int, int] | None = None  # (min, max) timestamp held back
        self._kinds_seen: set[int] = set()
        self._dropper = flv.LiveTagDropper()

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        """onMetaData: written at the start of the stream when it arrives before."""
        if not self.primed:
            self.metadata = dict(metadata)
            self._maybe_prime()

    def on_tag(self, kind: int, timestamp_ms: int, payload: bytes, arrived: float | None) -> None:
        """One audio or video message body; `arrived`: when (Unix seconds), if wanted."""
        if kind == flv.TAG_AUDIO and self.audio_config is None:
            audio = flv.audio_info(payload)
            if audio is not None and audio.config and audio.sample_rate:
                self.audio_config = audio
        if self.primed:
            if kind in self.kinds:
                self._write_tag(_Held(kind, timestamp_ms, payload, arrived))
            else:
                if not self.ignored_tags:
                    logger.warning("%s ignoring a stream that started late", self.prefix)
                self.ignored_tags += 1
            return
        self._held.append(_Held(kind, timestamp_ms, payload, arrived))
        self._held_bytes += len(payload)
        span = self._held_span or (timestamp_ms, timestamp_ms)
        self._held_span = (min(span[0], timestamp_ms), max(span[1], timestamp_ms))
        self._kinds_seen.add(kind)
        self._maybe_prime()

    def finish(self) -> None:
        """The session ends: write what is held back (the feed is closed by its owner)."""
        if not self.primed and self._held:
            self._prime()

    def _maybe_prime(self) -> None:
        if not self._held:
            return
        seen = self._kinds_seen
        ready = seen >= {flv.TAG_AUDIO, flv.TAG_VIDEO}
        if not ready and self.metadata is not None:
            expected = declared_kinds(self.metadata)
            ready = bool(expected) and seen >= expected
        if not ready and self._held_span is not None:
            first, last = self._held_span
            ready = last - first >= PRIME_WAIT_MS
        if ready or self._held_bytes >= self.feed.max_bytes // 2:
            self._prime()

    def _prime(self) -> None:
        """Write the FLV header and the held tags, the first tag of each kind first."""
        self.primed = True
        self.kinds = frozenset(self._kinds_seen)
        audio, video = flv.TAG_AUDIO in self.kinds, flv.TAG_VIDEO in self.kinds
        self.feed.write(flv.file_header(audio=audio, video=video), essential=True)
        if self.metadata:
            script = flv.tag(flv.TAG_SCRIPT, 0, flv.metadata_payload(self.metadata))
            self.feed.write(script, essential=True)
        firsts: dict[int, int] = {}
        for position, held in enumerate(self._held):
            firsts.setdefault(held.kind, position)
        order = sorted(firsts.values())
        order += [i for i in range(len(self._held)) if i not in firsts.values()]
        for position in order:
            self._write_tag(self._held[position])
        self._held = []
        self._held_bytes = 0

    def _write_tag(self, held: _Held) -> None:
        data = flv.tag(held.kind, held.timestamp_ms, held.payload)
        if self._dropper.keep(held.kind, held.payload, self.feed.fits(len(data))):
            # The dropper decided (it keeps a tag over the cap only when essential).
            self.feed.write(data, arrived=held.arrived, essential=True)
        else:
            self.feed.drop(len(data))


def declared_kinds(metadata: Mapping[str, Any]) -> set[int]:
    """Which tag kinds onMetaData says the stream has."""
    kinds = set()
    if any(key in metadata for key in ("videocodecid", "width", "height")):
        kinds.add(flv.TAG_VIDEO)
    if any(key in metadata for key in ("audiocodecid", "audiosamplerate", "audiochannels")):
        kinds.add(flv.TAG_AUDIO)
    return kinds
