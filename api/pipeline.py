"""One live job's running pipeline: decoder -> encoder -> HLS writer, and its publisher.

The live's three tracks (`media.fanout`), each for any number of readers:
`source` (the demuxed packets, codec level), `frames` (decoded frames, or the packets
of a copy: the ladder encoder reads them) and `encoder.encoded` (every rendition's
packets: the HLS writer reads them). A restream, a viewer or a cut subscribes to one.

A `JobPipeline` lives from the job's first publish until the job goes offline. Publish
sessions come and go (reconnects) on the same pipeline: the output continues, marked
as a discontinuity. Media threads report back through `events`, which `api.running`
turns into status changes and timing rows on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from encoder.live_encoder import LiveEncoder
from encoder.templates import JobTemplate
from ingest.adapter import DecoderSession
from ingest.decode import LiveDecoder
from ingest.health import Health
from ingest.media import MediaItem, SourceItem, media_broadcast, source_broadcast
from ingest.session import PublishRequest, TransportStatistics
from ingest.stats import SourceStatistics
from media.fanout import Broadcast, Reader
from media.outbound import OutboundPolicy
from packager.hls import HlsWriter
from packager.layout import object_prefix
from packager.object_store import S3Storage
from packager.spool import SpoolBudget
from restream.forwarder import Destination, RestreamState
from restream.live import LiveRestreams

from .statistics import OutputStatistics
from .webhooks.events import RESTREAM_CHILD_STATES

logger = logging.getLogger(__name__)

# Decoded frames (and audio frames) waiting for the encoder: at most 120 items (about
# 1.5 s of 30 fps video with its audio) and 96 MB of pictures (30 1080p frames).
MEDIA_QUEUE_ITEMS = 120
MEDIA_QUEUE_BYTES = 96 * 1024 * 1024
SOURCE_REFUSED = "SourceRefused"


@dataclass(frozen=True)
class PipelineLimits:
    """What a job's pipeline may use of the host (from the settings)."""

    dvr_window_seconds: float
    max_input_pixels: int | None = None
    spool_max_bytes_per_job: int | None = None
    spool_budget: SpoolBudget | None = None  # the host's, shared by every job
    media_queue_bytes: int = MEDIA_QUEUE_BYTES
    # Restreams: where they may connect, the slate's image, how long a slate lasts.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    slate_image: Path | None = None
    slate_max_seconds: float = 30.0


@dataclass(frozen=True)
class PipelineEvent:
    """Something a media thread saw; `RunningPipelines` records it on the loop."""

    job_id: int
    kind: str  # "media", "closed", "failed", "timing", "restream"
    child_status: str = ""
    message: str = ""
    rendition: str | None = None  # the output the event is about
    restream: Destination | None = None  # the restream a "restream" event is about


# A restream's state, as its timing rows' `childStatus` say it (the events' table, read
# the other way).
RESTREAM_CHILD_STATUS = {
    RestreamState(state): child for child, state in RESTREAM_CHILD_STATES.items()
}


EventSink = Callable[[PipelineEvent], None]


class JobPipeline:
    """Decoder, encoder and HLS writer of one live job."""

    def __init__(
        self,
        job: dict[str, Any],
        template: JobTemplate,
        storage: S3Storage,
        spool_dir: Path,
        events: EventSink,
        *,
        limits: PipelineLimits,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        self.job_id = int(job["id"])
        self.template = template
        self.events = events
        self.lock_key = str(uuid.uuid4())
        label = f"job {self.job_id}"
        self.source: Broadcast[SourceItem] = source_broadcast(label)
        self.frames: Broadcast[MediaItem] = media_broadcast(label)
        self.ladder: Reader[MediaItem] = self.frames.subscribe(
            "ladder",
            max_items=MEDIA_QUEUE_ITEMS,
            max_bytes=limits.media_queue_bytes,
            late=False,
            paces=True,  # a source ahead of real time waits for the ladder (no loss)
        )
        self.failed: BaseException | None = None
        self._fail_lock = threading.Lock()
        self.session: DecoderSession | None = None
        self.decoder = LiveDecoder(
            self.frames,
            decode=not template.passthrough,
            label=label,
            on_error=self._on_error,
            on_refused=self._on_refused,
            max_pixels=limits.max_input_pixels,
            source=self.source,
        )
        self.writer = HlsWriter(
            storage,
            job["bucket"],
            object_prefix(job["destination"], job["file_path"]),
            spool_dir / str(self.job_id),
            dvr_window_seconds=limits.dvr_window_seconds,
            label=label,
            on_event=self._timing,
            on_failure=self._on_error,
            # The bucket is ensured (and checked) by the upload workers, retried
            # through an outage: admission never waits on the storage.
            prepare=prepare or partial(storage.ensure_bucket, job["bucket"]),
            spool_max_bytes=limits.spool_max_bytes_per_job,
            spool_budget=limits.spool_budget,
            stop_timeout_seconds=2.0,  # a worker stuck in a storage call ends by itself
        )
        self.encoder = LiveEncoder(
            template,
            self.ladder,
            self.writer,
            label=label,
            on_event=self._timing,
            on_failure=self._on_error,
        )
        self.encoder.start()
        # Readers of the source track, each on its own thread (`update_restreams`).
        self.restreams = LiveRestreams(
            self.source,
            limits.outbound,
            on_state=self._restream_state,
            slate_image=limits.slate_image,
            slate_max_seconds=limits.slate_max_seconds,
            label=label,
            ladder=self.encoder.encoded,
            rendition=self.encoder.top_rendition,
        )

    def update_restreams(self, destinations: list[Destination]) -> None:
        """Forward the live to exactly these destinations (the enabled restreams)."""
        self.restreams.update(destinations)

    def _restream_state(self, destination: Destination, state: RestreamState, message: str) -> None:
        status = RESTREAM_CHILD_STATUS[state]
        self.events(PipelineEvent(self.job_id, "restream", status, message, restream=destination))

    def emit(
        self, kind: str, child_status: str = "", message: str = "", rendition: str | None = None
    ) -> None:
        self.events(PipelineEvent(self.job_id, kind, child_status, message, rendition))

    def _timing(self, child_status: str, message: str, rendition: str | None) -> None:
        self.emit("timing", child_status, message, rendition)

    def _on_refused(self, reason: str) -> None:
        """The decoder refused the source (any thread); the refused session itself
        rejects its publisher (`DecoderSession.refuse`)."""
        self.emit("timing", SOURCE_REFUSED, reason)

    def _on_error(self, exc: BaseException) -> None:
        with self._fail_lock:
            if self.failed is not None:
                return
            self.failed = exc
        logger.error("[job %s] pipeline failed: %s", self.job_id, exc)
        self.emit("failed", "PipelineFailed", f"{type(exc).__name__}: {exc}")

    # -- publisher sessions -----------------------------------------------------

    def attach(self, request: PublishRequest) -> DecoderSession:
        """The publisher's session, feeding this pipeline's decoder (on the loop)."""
        session = DecoderSession(
            self.decoder,
            request,
            on_first_media=self._media_started,
            on_closed=self.session_closed,
        )
        self.session = session
        return session

    def _media_started(self, session: DecoderSession) -> None:
        self.emit("media", "MediaStarted", f"first media from {session.request.remote}")

    def session_closed(self, session: DecoderSession, reason: str) -> None:
        if self.session is session:
            self.session = None
        # A publisher refused before any media leaves the job waiting, not interrupted.
        kind = "timing" if session.refused and not session.media_seen else "closed"
        self.emit(kind, "PublisherDisconnected", f"{session.request.remote}: {reason}")

    @property
    def publishing(self) -> bool:
        return self.session is not None

    # -- statistics ---------------------------------------------------------------

    def input_statistics(self) -> SourceStatistics:
        return self.decoder.stats()

    def transport_statistics(self) -> TransportStatistics | None:
        """The publisher's transport's own figures (SRT), None without them."""
        session = self.session
        if session is None or session.request.transport_stats is None:
            return None
        try:
            return session.request.transport_stats()
        except Exception:  # a connection closing under us: no figures, no failure
            logger.debug("[job %s] transport statistics unavailable", self.job_id, exc_info=True)
            return None

    def output_statistics(self) -> list[OutputStatistics]:
        """Per rendition: what the encoder measured, and what was published."""
        published = self.writer.stats()
        return [OutputStatistics(row, published.get(row.name)) for row in self.encoder.stats()]

    def track_readers(self) -> list[tuple[str, list[Reader[Any]]]]:
        """The readers of the live's tracks now, by track."""
        return [
            ("source", list(self.source.readers)),
            ("frames", list(self.frames.readers)),
            ("encoded", list(self.encoder.encoded.readers)),
        ]

    @property
    def state(self) -> str:
        """ "failed", "publishing" or "waiting" (for its publisher)."""
        if self.failed is not None:
            return "failed"
        return "publishing" if self.session is not None else "waiting"

    @property
    def ingest_dropped_frames(self) -> int:
        """Decoded frames the encoder was too slow to take (dropped before any rendition)."""
        return self.ladder.dropped["video"]

    def health(self) -> Health:
        """The input's health now (`ingest.health`, fed by the decoder); the frames
        onair dropped itself (the ladder or a rendition behind) are `encoderOverloaded`,
        never starvation."""
        monitor = self.decoder.health
        now = self.decoder.health_clock()
        dropped = self.ingest_dropped_frames + sum(r.dropped_frames for r in self.encoder.stats())
        monitor.on_encoder_dropped(dropped, now)
        return monitor.evaluate(now)

    # -- end ----------------------------------------------------------------------

    def stop(
        self, reason: str, finish_timeout_seconds: float, encoder_timeout_seconds: float = 30.0
    ) -> None:
        """Blocking: end the session, drain the encoder, publish the rest (ENDLIST).

        Bounded: the decoder and the encoder get `encoder_timeout_seconds` to flush,
        the uploads `finish_timeout_seconds`; what is left stays in the spool."""
        deadline = time.monotonic() + encoder_timeout_seconds
        self.decoder.stop(min(5.0, encoder_timeout_seconds / 2))
        self.frames.close()
        self.source.close()  # the restreams send what they have, then stop
        # flushes, then the writer's finish() with what is left (closed past it)
        self.encoder.stop(
            max(0.5, deadline - time.monotonic()), finish_timeout_seconds=finish_timeout_seconds
        )
        self.restreams.stop()
        logger.info("[job %s] pipeline stopped: %s", self.job_id, reason)
