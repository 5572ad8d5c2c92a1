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
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

from encoder.live_encoder import LiveEncoder
from encoder.program import (
    BACKUP,
    PRIMARY,
    InputState,
    ProgramEvent,
    ProgramFeed,
    ProgramInput,
    ProgramRules,
)
from encoder.templates import JobTemplate
from ingest.adapter import DecoderSession
from ingest.decode import LiveDecoder
from ingest.health import Health, HealthState, ReasonType
from ingest.media import MediaItem, SourceItem, media_broadcast, source_broadcast
from ingest.session import IngestProtocol, PublishRequest, TransportStatistics
from ingest.stats import SourceStatistics
from media.fanout import Broadcast, Reader
from media.outbound import OutboundPolicy
from packager.hls import HlsWriter
from packager.layout import object_prefix
from packager.object_store import ObjectStore, S3Storage
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
    slate_max_seconds: float = 30.0  # the reconnect window: also the input-loss fill's
    # The input-loss fill (`encoder.program`): the last picture this long, then the slate.
    input_loss_repeat_seconds: float = 1.0
    input_slate_image: Path | None = None


@dataclass(frozen=True)
class PipelineEvent:
    """Something a media thread saw; `RunningPipelines` records it on the loop."""

    job_id: int
    kind: str  # "media", "closed", "failed", "timing", "restream", "input"
    child_status: str = ""
    message: str = ""
    rendition: str | None = None  # the output the event is about
    restream: Destination | None = None  # the restream a "restream" event is about
    program: ProgramEvent | None = None  # an "input" event: a switch between inputs


# A restream's state, as its timing rows' `childStatus` say it (the events' table, read
# the other way).
RESTREAM_CHILD_STATUS = {
    RestreamState(state): child for child, state in RESTREAM_CHILD_STATES.items()
}


EventSink = Callable[[PipelineEvent], None]


@dataclass(eq=False)
class PipelineInput:
    """One input of the job (a Single job has the primary; a Standard job a backup
    too): its decoder, its tracks, the program's reader, its publisher's session."""

    name: str
    decoder: LiveDecoder
    frames: Broadcast[MediaItem]
    source: Broadcast[SourceItem]
    ladder: Reader[MediaItem]
    session: DecoderSession | None = None

    def starving(self) -> str | None:
        """The input reasons its health is Starving for now, None when it is not
        starving. Never encoderOverloaded (onair's own drops), nor publisherGone (the
        program hears of that from the session's end, in order with its media)."""
        health = self.decoder.health.evaluate(self.decoder.health_clock())
        if health.state is not HealthState.STARVING:
            return None
        ignored = (ReasonType.ENCODER_OVERLOADED, ReasonType.PUBLISHER_GONE)
        reasons = [r for r in health.reasons if r.type not in ignored]
        return "; ".join(f"{r.type.value} ({r.description})" for r in reasons) or None


def program_rules(
    job: dict[str, Any], template: JobTemplate, limits: PipelineLimits
) -> ProgramRules:
    """How the job's program chooses and fills, from its input settings."""
    return ProgramRules(
        loss_threshold_seconds=int(job.get("input_loss_threshold_ms") or 1000) / 1000,
        repeat_seconds=limits.input_loss_repeat_seconds,
        fill_max_seconds=limits.slate_max_seconds,
        failback_after_seconds=float(job.get("failback_after_seconds") or 30.0),
        prefer_primary=(job.get("input_preference") or "primary") != "equal",
        slate_title=str(job.get("description") or job.get("name") or f"live {job['id']}"),
        slate_image=limits.input_slate_image,
        relay=template.passthrough,
    )


class JobPipeline:
    """Decoder(s), program, encoder and HLS writer of one live job."""

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
        writes: ObjectStore | None = None,
        timeline_start: Fraction = Fraction(0),
    ) -> None:
        """`writes`: where the HLS writer writes (the job's fenced store, `FencedStore`);
        default `storage`. `timeline_start`: where the output timeline begins (past the
        stored recording it continues, `encoder.timeline.continuing_at`)."""
        self.job_id = int(job["id"])
        self.template = template
        self.events = events
        self.lock_key = str(uuid.uuid4())
        label = f"job {self.job_id}"
        self.failed: BaseException | None = None
        self._fail_lock = threading.Lock()
        names = [PRIMARY, BACKUP] if int(job.get("input_class") or 0) == 1 else [PRIMARY]
        self.inputs = {name: self._input(name, label, template, limits) for name in names}
        primary = self.inputs[PRIMARY]
        hls = int(job.get("server_type") or 0) == int(IngestProtocol.HLS)  # segment by segment
        # The primary's tracks: the restreams read its source.
        self.decoder, self.frames, self.source = primary.decoder, primary.frames, primary.source
        self.program = ProgramFeed(
            [ProgramInput(i.name, i.ladder, i.starving, bursty=hls) for i in self.inputs.values()],
            program_rules(job, template, limits),
            on_event=self._program_event,
            label=label,
        )
        self.writer = HlsWriter(
            writes if writes is not None else storage,
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
            self.program,
            self.writer,
            label=label,
            on_event=self._timing,
            on_failure=self._on_error,
            timeline_start=timeline_start,
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

    def _input(
        self, name: str, label: str, template: JobTemplate, limits: PipelineLimits
    ) -> PipelineInput:
        label = label if name == PRIMARY else f"{label} {name}"
        source: Broadcast[SourceItem] = source_broadcast(label)
        frames: Broadcast[MediaItem] = media_broadcast(label)
        ladder = frames.subscribe(
            "ladder",
            max_items=MEDIA_QUEUE_ITEMS,
            max_bytes=limits.media_queue_bytes,
            late=False,
            paces=True,  # a source ahead of real time waits for the ladder (no loss)
        )
        decoder = LiveDecoder(
            frames,
            decode=not template.passthrough,
            label=label,
            on_error=self._on_error,
            on_refused=self._on_refused,
            max_pixels=limits.max_input_pixels,
            source=source,
        )
        return PipelineInput(name, decoder, frames, source, ladder)

    @property
    def ladder(self) -> Reader[MediaItem]:
        """The program's reader of the primary's frames."""
        return self.inputs[PRIMARY].ladder

    @property
    def standard(self) -> bool:
        return BACKUP in self.inputs

    def _program_event(self, event: ProgramEvent) -> None:
        self.events(PipelineEvent(self.job_id, "input", event.kind, event.message, program=event))

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

    def attach(self, request: PublishRequest, input_name: str = PRIMARY) -> DecoderSession:
        """The publisher's session on one input, feeding its decoder (on the loop)."""
        target = self.inputs[input_name]
        session = DecoderSession(
            target.decoder,
            request,
            on_first_media=partial(self._media_started, target),
            on_closed=partial(self._session_closed, target),
        )
        target.session = session
        return session

    def _media_started(self, target: PipelineInput, session: DecoderSession) -> None:
        others = [i for i in self.inputs.values() if i is not target and i.session is not None]
        where = f" on the {target.name} input" if self.standard else ""
        message = f"first media from {session.request.remote}{where}"
        if any(other.session.media_seen for other in others if other.session is not None):
            self.emit("timing", "MediaStarted", message)  # the live was on already
        else:
            self.emit("media", "MediaStarted", message)

    def _session_closed(self, target: PipelineInput, session: DecoderSession, reason: str) -> None:
        if target.session is session:
            target.session = None
        where = f" ({target.name} input)" if self.standard else ""
        message = f"{session.request.remote}{where}: {reason}"
        # A publisher refused before any media leaves the job waiting, not interrupted;
        # so does one input of a Standard job while the other still publishes.
        quiet = (session.refused and not session.media_seen) or self.publishing
        self.emit("timing" if quiet else "closed", "PublisherDisconnected", message)

    def session_closed(self, session: DecoderSession, reason: str) -> None:
        """The primary's publisher left (tests that drive sessions by hand)."""
        self._session_closed(self.inputs[PRIMARY], session, reason)

    @property
    def session(self) -> DecoderSession | None:
        """The primary's publisher session, else the backup's."""
        for target in self.inputs.values():
            if target.session is not None:
                return target.session
        return None

    @property
    def publishing(self) -> bool:
        return any(target.session is not None for target in self.inputs.values())

    def publishing_on(self, input_name: str) -> bool:
        target = self.inputs.get(input_name)
        return target is not None and target.session is not None

    def close_sessions(self, reason: str) -> None:
        """Drop every publisher of the job (from the loop)."""
        for target in self.inputs.values():
            if target.session is not None:
                target.session.close(reason)

    def input_states(self) -> list[InputState]:
        """Each input as the program sees it (stats)."""
        return self.program.inputs()

    def _active(self) -> PipelineInput:
        name = self.program.active_input
        return self.inputs.get(name or PRIMARY, self.inputs[PRIMARY])

    # -- statistics ---------------------------------------------------------------

    def input_statistics(self) -> SourceStatistics:
        """The active input's (the primary's before any)."""
        return self._active().decoder.stats()

    def transport_statistics(self) -> TransportStatistics | None:
        """The active publisher's transport's own figures (SRT), None without them."""
        session = self._active().session
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
        tracks: list[tuple[str, list[Reader[Any]]]] = []
        for target in self.inputs.values():
            suffix = "" if target.name == PRIMARY else f" {target.name}"
            tracks.append((f"source{suffix}", list(target.source.readers)))
            tracks.append((f"frames{suffix}", list(target.frames.readers)))
        tracks.append(("encoded", list(self.encoder.encoded.readers)))
        return tracks

    @property
    def state(self) -> str:
        """ "failed", "publishing" or "waiting" (for its publisher)."""
        if self.failed is not None:
            return "failed"
        return "publishing" if self.publishing else "waiting"

    @property
    def ingest_dropped_frames(self) -> int:
        """Decoded frames the encoder was too slow to take (dropped before any rendition)."""
        return sum(target.ladder.dropped["video"] for target in self.inputs.values())

    def health(self) -> Health:
        """The active input's health now (`ingest.health`, fed by its decoder); the
        frames onair dropped itself (the ladder or a rendition behind) are
        `encoderOverloaded`, never starvation."""
        decoder = self._active().decoder
        monitor = decoder.health
        now = decoder.health_clock()
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
        for target in self.inputs.values():
            target.decoder.stop(min(5.0, encoder_timeout_seconds / 2))
        for target in self.inputs.values():
            target.frames.close()  # the program ends once every input did
            target.source.close()  # the restreams send what they have, then stop
        # flushes, then the writer's finish() with what is left (closed past it)
        self.encoder.stop(
            max(0.5, deadline - time.monotonic()), finish_timeout_seconds=finish_timeout_seconds
        )
        self.restreams.stop()
        logger.info("[job %s] pipeline stopped: %s", self.job_id, reason)
