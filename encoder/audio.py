"""Encode the job's audio once to AAC, on the output timeline.

Every session's audio is converted to the job's fixed format (set by the first
session: its sample rate, mono or stereo, planar float for the AAC encoder), cut
into 1024-sample frames with timestamps counted in samples on the output timeline,
and encoded. A gap in the input (upstream drops) of more than `GAP_TOLERANCE`
restarts the sample clock at the new position, so audio never drifts from video.
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction

import av
from av.audio.fifo import AudioFifo
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream

from media.segments import AudioPacket

log = logging.getLogger(__name__)

GAP_TOLERANCE = Fraction(1, 50)  # 20 ms: more than FLV's 1 ms rounding, less than a frame


class AacEncoder:
    """AAC-LC encoder with a fixed output format; used from one thread."""

    def __init__(self, sample_rate: int, channels: int, bitrate_bps: int, label: str = "") -> None:
        self.sample_rate = sample_rate
        self.layout = "stereo" if channels >= 2 else "mono"
        self._label = label
        # The encoder lives on a stream of a never-written container: its codec
        # parameters (with the AudioSpecificConfig) are the template every segment
        # muxer copies.
        self._holder = av.open(io.BytesIO(), "w", format="mpegts")
        stream = self._holder.add_stream("aac", rate=sample_rate)
        stream.codec_context.bit_rate = bitrate_bps
        stream.codec_context.layout = self.layout
        stream.codec_context.time_base = Fraction(1, sample_rate)
        self._holder.start_encoding()
        self.stream: AudioStream = stream
        self.frame_samples = stream.codec_context.frame_size or 1024
        self._time_base = Fraction(1, sample_rate)
        self._resampler: AudioResampler | None = None
        self._fifo: AudioFifo | None = None
        self._fifo_start = 0  # output sample position of the fifo's first sample
        self._emitted_end = 0  # output sample position after the last encoded frame
        self.frames_in = 0
        self.gaps = 0

    @property
    def extradata(self) -> bytes | None:
        return self.stream.codec_context.extradata

    @property
    def end_seconds(self) -> Fraction:
        """Where the encoded audio ends on the output timeline."""
        return Fraction(self._emitted_end, self.sample_rate)

    def start_session(self) -> None:
        """A new publish session: new resampler (its input format may differ)."""
        self._resampler = AudioResampler(format="fltp", layout=self.layout, rate=self.sample_rate)
        self._fifo = None

    def end_session(self) -> None:
        """Drop the partial frame (< 1024 samples, 21 ms) left by the session."""
        self._fifo = None

    def encode(self, frame: av.AudioFrame, output_seconds: Fraction) -> list[AudioPacket]:
        """Encode `frame`, whose first sample is at `output_seconds` on the timeline."""
        if self._resampler is None:
            self.start_session()
        assert self._resampler is not None
        self.frames_in += 1
        position = round(output_seconds * self.sample_rate)
        packets: list[AudioPacket] = []
        for converted in self._resampler.resample(frame):
            packets.extend(self._push(converted, position))
            position += converted.samples
        return packets

    def flush(self) -> list[AudioPacket]:
        """End of the job: drain the encoder."""
        self._fifo = None
        return [self._to_audio_packet(p) for p in self.stream.codec_context.encode(None)]

    def close(self) -> None:
        self._holder.close()

    def _push(self, frame: av.AudioFrame, position: int) -> list[AudioPacket]:
        tolerance = round(GAP_TOLERANCE * self.sample_rate)
        if self._fifo is not None:
            expected = self._fifo_start + self._fifo.samples
            if position > expected + tolerance:
                self.gaps += 1
                log.debug("[audio %s] gap of %d samples: resync", self._label, position - expected)
                self._fifo = None
            elif position < expected - tolerance:
                return []  # overlaps what was already taken: drop it
        if self._fifo is None:
            self._fifo = AudioFifo()
            self._fifo_start = max(position, self._emitted_end)
        frame.pts = None  # the fifo would check continuity; we count samples ourselves
        self._fifo.write(frame)
        packets: list[AudioPacket] = []
        context = self.stream.codec_context
        while self._fifo.samples >= self.frame_samples:
            chunk = self._fifo.read(self.frame_samples)
            assert chunk is not None
            chunk.pts = self._fifo_start
            chunk.time_base = self._time_base
            self._fifo_start += self.frame_samples
            self._emitted_end = self._fifo_start
            packets.extend(self._to_audio_packet(p) for p in context.encode(chunk))
        return packets

    def _to_audio_packet(self, packet: av.Packet) -> AudioPacket:
        pts = packet.pts if packet.pts is not None else 0
        dts = packet.dts if packet.dts is not None else pts
        return AudioPacket(
            data=bytes(packet),
            pts=pts,
            dts=dts,
            duration=packet.duration or self.frame_samples,
            time_base=packet.time_base or self._time_base,
        )
