"""One live job's running pipeline: decoder -> encoder -> HLS publisher, and its publisher.

A `JobPipeline` lives from the job's first publish until the job goes offline. Publish
sessions come and go (reconnects) on the same pipeline: the output continues, marked
as a discontinuity. Media threads report back through `events`, which the runtime
turns into status changes and timing rows on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from encoder.pipeline import LiveEncoder
from encoder.templates import JobTemplate
from ingest.decode import LiveDecoder
from ingest.media import MediaQueue
from ingest.rtmp.server import PublishRequest
from packager.layout import object_prefix
from packager.publisher import HlsPublisher
from packager.segments import Segment, VariantInfo
from packager.spool import SpoolBudget
from packager.storage import S3Storage

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
    finish_timeout_seconds: float = 3600.0


@dataclass(frozen=True)
class PipelineEvent:
    """Something a media thread saw; the runtime records it on the loop."""

    job_id: int
    kind: str  # "media", "closed", "failed", "timing"
    child_status: str = ""
    message: str = ""
    rendition: str | None = None  # the output the event is about


EventSink = Callable[[PipelineEvent], None]


class BoundedFinishSink:
    """The publisher as the encoder's sink, with a bounded `finish()`.

    The publisher retries uploads through an outage for as long as it is asked to;
    a stopping service cannot wait that long: past the bound, the publisher is closed
    and what was not uploaded stays in the spool on disk.
    """

    def __init__(self, publisher: HlsPublisher) -> None:
        self.publisher = publisher
        self.finish_timeout_seconds = 3600.0

    def start(self, variants: Sequence[VariantInfo], segment_seconds: float) -> None:
        self.publisher.start(variants, segment_seconds)

    def add_segment(self, segment: Segment) -> None:
        self.publisher.add_segment(segment)

    def finish(self) -> None:
        try:
            self.publisher.finish(timeout=self.finish_timeout_seconds)
        except TimeoutError:
            logger.error(
                "uploads not finished within %.0f s: left in the spool",
                self.finish_timeout_seconds,
            )
            self.publisher.close()


class JobSession:
    """The PublishSession of one connected publisher: forwards media into the decoder."""

    def __init__(self, pipeline: JobPipeline, request: PublishRequest) -> None:
        self.pipeline = pipeline
        self.request = request
        self._media_seen = False
        self._closed = False
        self._refused: str | None = None
        self._loop = asyncio.get_running_loop()  # made by admission, on the loop
        pipeline.decoder.start_session()

    def on_metadata(self, metadata: dict[str, Any]) -> None:
        self.pipeline.decoder.on_metadata(metadata)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        if self._refused is not None:
            return  # the connection is being dropped: nothing more of it is taken
        if not self._media_seen:
            self._media_seen = True
            self.pipeline.emit("media", "MediaStarted", f"first media from {self.request.remote}")
        self.pipeline.decoder.on_media(kind, timestamp_ms, payload)

    def on_close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.pipeline.decoder.end_session(reason)
        self.pipeline.session_closed(self, reason)

    def refuse(self, reason: str) -> None:
        """The source itself is refused (too large): drop its connection, say why."""
        if self._refused is not None:
            return
        self._refused = reason
        # From the decode thread too: the connection lives on the loop.
        self._loop.call_soon_threadsafe(self.request.reject, reason)

    @property
    def refused(self) -> str | None:
        return self._refused

    @property
    def media_seen(self) -> bool:
        return self._media_seen

    def close(self, reason: str) -> None:
        """Drop the publisher's connection (job offline, pipeline failed)."""
        self.request.close(reason)


class JobPipeline:
    """Decoder, encoder and publisher of one live job."""

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
        self.queue = MediaQueue(MEDIA_QUEUE_ITEMS, limits.media_queue_bytes)
        label = f"job {self.job_id}"
        self.failed: BaseException | None = None
        self._fail_lock = threading.Lock()
        self.session: JobSession | None = None
        self.decoder = LiveDecoder(
            self.queue,
            decode=not template.passthrough,
            label=label,
            on_error=self._on_error,
            on_refused=self._on_refused,
            max_pixels=limits.max_input_pixels,
        )
        self.publisher = HlsPublisher(
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
        self.sink = BoundedFinishSink(self.publisher)
        self.sink.finish_timeout_seconds = limits.finish_timeout_seconds
        self.encoder = LiveEncoder(
            template,
            self.queue,
            self.sink,
            label=label,
            on_event=self._timing,
            on_failure=self._on_error,
        )
        self.encoder.start()

    def emit(
        self, kind: str, child_status: str = "", message: str = "", rendition: str | None = None
    ) -> None:
        self.events(PipelineEvent(self.job_id, kind, child_status, message, rendition))

    def _timing(self, child_status: str, message: str, rendition: str | None) -> None:
        self.emit("timing", child_status, message, rendition)

    def _on_refused(self, reason: str) -> None:
        """The decoder refused the source (any thread): the publisher is dropped."""
        session = self.session
        if session is not None:
            session.refuse(reason)
        self.emit("timing", SOURCE_REFUSED, reason)

    def _on_error(self, exc: BaseException) -> None:
        with self._fail_lock:
            if self.failed is not None:
                return
            self.failed = exc
        logger.error("[job %s] pipeline failed: %s", self.job_id, exc)
        self.emit("failed", "PipelineFailed", f"{type(exc).__name__}: {exc}")

    # -- publisher sessions -----------------------------------------------------

    def attach(self, request: PublishRequest) -> JobSession:
        session = JobSession(self, request)
        self.session = session
        return session

    def session_closed(self, session: JobSession, reason: str) -> None:
        if self.session is session:
            self.session = None
        # A publisher refused before any media leaves the job waiting, not interrupted.
        kind = "timing" if session.refused and not session.media_seen else "closed"
        self.emit(kind, "PublisherDisconnected", f"{session.request.remote}: {reason}")

    @property
    def publishing(self) -> bool:
        return self.session is not None

    # -- statistics ---------------------------------------------------------------

    def input_statistics(self) -> dict[str, Any]:
        return self.decoder.stats()

    def output_statistics(self) -> list[dict[str, Any]]:
        """Per rendition: what the encoder measured, merged with what was published."""
        published = self.publisher.stats()
        return [{**published.get(row["name"], {}), **row} for row in self.encoder.stats()]

    @property
    def ingest_dropped_frames(self) -> int:
        """Decoded frames the encoder was too slow to take (dropped before any rendition)."""
        return self.queue.dropped_video

    # -- end ----------------------------------------------------------------------

    def stop(
        self, reason: str, finish_timeout_seconds: float, encoder_timeout_seconds: float = 30.0
    ) -> None:
        """Blocking: end the session, drain the encoder, publish the rest (ENDLIST).

        Bounded: the decoder and the encoder get `encoder_timeout_seconds` to flush,
        the uploads `finish_timeout_seconds`; what is left stays in the spool."""
        self.sink.finish_timeout_seconds = finish_timeout_seconds
        deadline = time.monotonic() + encoder_timeout_seconds
        self.decoder.stop(min(5.0, encoder_timeout_seconds / 2))
        self.queue.close()
        # flushes, then the sink's finish()
        self.encoder.stop(max(0.5, deadline - time.monotonic()))
        logger.info("[job %s] pipeline stopped: %s", self.job_id, reason)
