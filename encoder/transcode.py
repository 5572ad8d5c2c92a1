"""The dispatcher side of a transcoding job: plan, time, and hand frames to renditions.

Runs in the LiveEncoder's dispatcher thread. Per decoded video frame: map its
timestamp onto the output timeline, decide once whether it is a forced keyframe
(the first frame at/after each GOP boundary, and each session's first frame), and
offer it to every rendition worker. Per audio frame: encode AAC once and offer the
packets to every rendition (each muxes the same packets into its segments).
"""

from __future__ import annotations

import collections
import logging
import time
from fractions import Fraction

import av
from av.video.frame import PictureType

from encoder.audio import AacEncoder
from encoder.codecs import avc1_codec_string, codecs_attribute, mp4a_codec_string
from encoder.errors import UnsupportedSource
from encoder.host import RENDITION_SKIPPED, EncoderHost
from encoder.ladder import RenditionPlan, plan_ladder
from encoder.scaling import Pictures, Size, cascade
from encoder.statistics import RenditionStatistics
from encoder.templates import JobTemplate
from encoder.timeline import ArrivalClock, KeyframeClock, SessionClock, keyframe_plan
from encoder.video import RenditionWorker
from ingest.media import SessionEnd, SessionStart, VideoParams
from media.clock import TICK_TIME_BASE, TICKS_PER_SECOND, seconds_to_ticks
from media.segments import AudioPacket, VariantInfo

log = logging.getLogger(__name__)

DEFAULT_FRAME_RATE = Fraction(30)  # when the source does not say
DEFAULT_AUDIO_BITRATE_BPS = 128_000
DEFAULT_SAMPLE_RATE = 48_000  # when the probe did not say (frames are resampled to it)
EARLY_AUDIO_PACKETS = 256  # audio encoded before the first video frame (about 5 s)


def frame_seconds(frame: av.VideoFrame | av.AudioFrame) -> Fraction | None:
    """A decoded frame's timestamp in seconds, exactly when possible."""
    if frame.pts is not None and frame.time_base is not None:
        return frame.pts * frame.time_base
    return None


class TranscodeMode:
    """Decoded frames in, a ladder of H.264 renditions + one AAC track out."""

    def __init__(self, template: JobTemplate, host: EncoderHost) -> None:
        self._template = template
        self._host = host
        self._prefix = f"[encoder {host.label}]"
        self._arrivals = ArrivalClock()
        self._clock = SessionClock(self._arrivals, host.clock.unix, host.timeline_start)
        self._keys: KeyframeClock | None = None
        self._workers: list[RenditionWorker] = []
        self._cascade: dict[Size, Size | None] = {}  # each rendition's size: scaled from
        self._audio: AacEncoder | None = None
        self._frame_ticks = round(TICKS_PER_SECOND / DEFAULT_FRAME_RATE)
        self._in_session = False
        self._session_first_frame = True
        self._discontinuity_pending = False
        self._last_video_ticks: int | None = None
        self._video_params: VideoParams | None = None
        self._audio_bitrate = 0
        self._early_audio: collections.deque[AudioPacket] = collections.deque(
            maxlen=EARLY_AUDIO_PACKETS
        )
        self.non_monotonic_frames = 0

    @property
    def workers(self) -> list[RenditionWorker]:
        return self._workers

    # -- media ---------------------------------------------------------------

    def session_start(self, start: SessionStart) -> None:
        if start.continues and self._in_session:
            # Another source of the same program (`encoder.program`): its audio may
            # be in another format; the timeline and keyframe cadence go on.
            if self._audio is not None:
                self._audio.end_session()
                self._audio.start_session()
            if start.wall_clock is not None:
                self._clock.anchor_again(start.wall_clock)
            return
        if self._in_session:
            self.session_end(SessionEnd(self._clock.session, "next session started"))
        if start.audio is not None and self._audio is None and not self._workers:
            # The job's audio format is fixed by the first session that has audio
            # before the ladder starts; later sessions are converted to it.
            self._audio_bitrate = self._template.audio_bitrate_bps or DEFAULT_AUDIO_BITRATE_BPS
            self._audio = AacEncoder(
                start.audio.sample_rate or DEFAULT_SAMPLE_RATE,
                start.audio.channels or 2,
                self._audio_bitrate,
                label=self._host.label,
            )
        self._video_params = start.video
        offset = self._clock.start_session(start.session, start.wall_clock)
        self._in_session = True
        self._session_first_frame = True
        self._last_video_ticks = None
        self._discontinuity_pending = start.session > 0
        if self._audio is not None:
            self._audio.start_session()
        if start.session > 0:
            self._host.event(
                "EncoderSessionStarted",
                f"session {start.session} continues the output at {float(offset):.3f} s",
                None,
            )

    def session_end(self, end: SessionEnd) -> None:
        if not self._in_session:
            return
        self._in_session = False
        if self._audio is not None:
            self._audio.end_session()
            self._clock.extend_to(self._audio.end_seconds)

    def video(self, frame: av.VideoFrame) -> None:
        if not self._in_session:
            return
        if not self._workers:
            # Planned on the first decoded frame: with a live probe (probesize 32)
            # the session's VideoParams often say 0x0.
            self._plan(frame.width, frame.height)
        assert self._keys is not None
        seconds = frame_seconds(frame)
        if seconds is None:
            # No timestamp: one nominal frame after the previous one.
            last = self._last_video_ticks
            ticks = 0 if last is None else last + self._frame_ticks
        else:
            ticks = seconds_to_ticks(self._clock.to_output(seconds))
        if self._last_video_ticks is not None and ticks <= self._last_video_ticks:
            self.non_monotonic_frames += 1
            if self.non_monotonic_frames == 1 or self.non_monotonic_frames % 100 == 0:
                log.warning(
                    "%s frame timestamp went back: dropped (%d so far)",
                    self._prefix,
                    self.non_monotonic_frames,
                )
            return
        self._last_video_ticks = ticks
        keyframe = self._keys.is_keyframe(ticks, session_start=self._session_first_frame)
        discontinuity = self._discontinuity_pending
        self._session_first_frame = False
        self._discontinuity_pending = False
        # Set before the frame is shared: workers only read these.
        frame.pts = ticks
        frame.time_base = TICK_TIME_BASE
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        self._clock.extend_to(Fraction(ticks + self._frame_ticks, TICKS_PER_SECOND))
        tuning = self._host.tuning
        deadline = time.monotonic() + tuning.handoff_timeout_seconds
        # Decided once for every rendition: drain x264 at this keyframe only when the
        # job keeps up with its input (see RenditionWorker._should_drain).
        drain = (
            keyframe
            and tuning.drain_at_keyframes
            and self._host.backlog() <= tuning.drain_max_backlog_items
        )
        pictures = Pictures(frame, self._cascade)  # every rendition's, scaled once
        for worker in self._workers:
            worker.offer_video(pictures, keyframe, discontinuity, deadline, drain=drain)

    def audio(self, frame: av.AudioFrame) -> None:
        if not self._in_session or self._audio is None:
            return
        seconds = frame_seconds(frame)
        if seconds is None:
            output = self._audio.end_seconds
        else:
            output = self._clock.to_output(seconds)
        packets = self._audio.encode(frame, output)
        self._clock.extend_to(self._audio.end_seconds)
        if not self._workers:
            self._early_audio.extend(packets)  # before the first video frame
            return
        for packet in packets:
            for worker in self._workers:
                worker.offer_audio(packet)

    def packet(self, packet: av.Packet) -> None:
        raise UnsupportedSource("a transcoding template needs decoded frames, got a packet")

    def end_of_media(self) -> None:
        """The queue is drained: flush the audio, let every worker flush and end."""
        if self._audio is not None:
            packets = self._audio.flush()
            for packet in packets:
                for worker in self._workers:
                    worker.offer_audio(packet)
        for worker in self._workers:
            worker.end_input()

    # -- lifecycle -----------------------------------------------------------

    def abort(self) -> None:
        for worker in self._workers:
            worker.abort()

    def join(self, deadline: float) -> bool:
        done = True
        for worker in self._workers:
            done = worker.join(max(0.0, deadline - time.monotonic())) and done
        return done

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        # The audio stream is every segmenter's template: keep it while one may mux.
        if self._audio is not None and not any(worker.alive for worker in self._workers):
            self._audio.close()

    def stats(self) -> list[RenditionStatistics]:
        return [worker.stats() for worker in self._workers]

    # -- planning ------------------------------------------------------------

    def _plan(self, width: int, height: int) -> None:
        template = self._template
        params = self._video_params
        declared_rate = params.frame_rate if params is not None else None
        frame_rate = declared_rate or DEFAULT_FRAME_RATE
        plans = plan_ladder(template, width, height)
        interval_ticks, segment_ticks = keyframe_plan(
            template.segment_seconds, template.gop_seconds, Fraction(frame_rate)
        )
        self._frame_ticks = max(1, round(TICKS_PER_SECOND / frame_rate))
        self._keys = KeyframeClock(interval_ticks, self._frame_ticks // 2)
        keyint_frames = max(1, round(interval_ticks * frame_rate / TICKS_PER_SECOND))
        audio = self._audio
        audio_codecs = mp4a_codec_string("aac", audio.extradata) if audio is not None else None
        workers = [
            RenditionWorker(
                plan,
                self._host,
                frame_rate=frame_rate,
                keyint_frames=keyint_frames,
                segment_seconds=segment_ticks / TICKS_PER_SECOND,
                audio_template=audio.stream if audio is not None else None,
                arrival_at=self._arrivals.at,
            )
            for plan in plans
        ]
        variants = [
            VariantInfo(
                name=worker.plan.name,
                width=worker.plan.width,
                height=worker.plan.height,
                frame_rate=float(declared_rate) if declared_rate else None,
                codecs=codecs_attribute(avc1_codec_string(worker.extradata), audio_codecs),
                target_bitrate_bps=(worker.plan.video_bitrate_bps or 0)
                + (self._audio_bitrate if audio is not None else 0),
                max_bitrate_bps=(worker.plan.maxrate_bps or 0)
                + (self._audio_bitrate if audio is not None else 0),
            )
            for worker in workers
        ]
        self._workers = workers
        self._cascade = cascade((plan.width, plan.height) for plan in plans)
        self._host.start_sink(variants)
        for worker in workers:
            for packet in self._early_audio:
                worker.offer_audio(packet)
            worker.start()
        self._early_audio.clear()
        self._host.event("EncoderStarted", _describe(plans, variants, audio), None)
        planned = {plan.name for plan in plans}
        for spec in template.renditions:
            if spec.name not in planned:
                self._host.event(RENDITION_SKIPPED, f"source is {width}x{height}", spec.name)


def _describe(
    plans: list[RenditionPlan], variants: list[VariantInfo], audio: AacEncoder | None
) -> str:
    parts = [
        f"{plan.describe()} {variant.codecs.split(',')[0]}"
        for plan, variant in zip(plans, variants, strict=True)
    ]
    text = f"{len(plans)} renditions: " + ", ".join(parts)
    if audio is not None:
        text += f"; audio aac {audio.sample_rate} Hz {audio.layout}"
    return text
