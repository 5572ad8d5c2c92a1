"""Per-job metrics on `/metrics`: read from the running pipelines at each scrape.

A custom collector rather than labelled counters kept up to date: each series exists
while its job's pipeline runs and is gone once the job goes offline (no series left
behind over days of jobs), and nothing is counted twice. Labels are bounded: the job
id (`live_job`: Prometheus keeps `job` for the scrape job), a rendition name, a track
and reader name, a reason; never a stream key or a URL.
Counters restart at 0 with a new pipeline (Prometheus reads that as a reset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ingest.health import HealthState
from restream.forwarder import RestreamState

from .pipeline import JobPipeline


class JobMetrics(Collector):
    """`pipelines()`: the pipelines running now, by job id."""

    def __init__(self, pipelines: Callable[[], Iterable[tuple[int, JobPipeline]]]) -> None:
        self._pipelines = pipelines

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families vary with the jobs: checked at each scrape

    def collect(self) -> Iterator[Metric]:
        bitrate = GaugeMetricFamily(
            "onair_job_input_bitrate_bits_per_second",
            "Source bitrate as measured at ingest",
            labels=["live_job", "kind"],
        )
        fps = GaugeMetricFamily("onair_job_input_fps", "Source frame rate", labels=["live_job"])
        output_bitrate = GaugeMetricFamily(
            "onair_job_output_bitrate_bits_per_second",
            "Each rendition's bitrate over its last segments (video, audio and TS)",
            labels=["live_job", "rendition"],
        )
        decoded = CounterMetricFamily(
            "onair_job_frames_decoded", "Video frames the decoder produced", labels=["live_job"]
        )
        dropped = CounterMetricFamily(
            "onair_job_frames_dropped",
            "Video frames dropped: before the ladder (ladder_behind) or by one rendition"
            " (rendition_behind)",
            labels=["live_job", "rendition", "reason"],
        )
        reader_dropped = CounterMetricFamily(
            "onair_job_reader_dropped",
            "Items a reader of one of the live's tracks was too slow to take",
            labels=["live_job", "track", "reader"],
        )
        segments = CounterMetricFamily(
            "onair_job_segments_published",
            "Segments stored and listed, the whole recording",
            labels=["live_job", "rendition"],
        )
        encoded = CounterMetricFamily(
            "onair_job_frames_encoded", "Video frames encoded", labels=["live_job", "rendition"]
        )
        latency = HistogramMetricFamily(
            "onair_job_upload_seconds",
            "How long each segment's upload to the object store took",
            labels=["live_job"],
        )
        spool = GaugeMetricFamily(
            "onair_job_spool_bytes", "Bytes spooled, not yet uploaded", labels=["live_job"]
        )
        outage = GaugeMetricFamily(
            "onair_job_storage_outage",
            "1 while the job's uploads fail (between StorageOutage and StorageRecovered)",
            labels=["live_job"],
        )
        state = GaugeMetricFamily(
            "onair_job_pipeline_state",
            "1 for the pipeline's state: publishing, waiting (no publisher) or failed",
            labels=["live_job", "state"],
        )
        health = GaugeMetricFamily(
            "onair_job_health",
            "1 for the input's health: healthy, starving (arriving too slowly or stopped)"
            " or unknown (no input yet)",
            labels=["live_job", "state"],
        )
        restream_state = GaugeMetricFamily(
            "onair_restream_state",
            "1 for each restream's state: idle, connecting, forwarding, reconnecting, errored",
            labels=["live_job", "restream", "state"],
        )
        restream_bytes = CounterMetricFamily(
            "onair_restream_sent_bytes",
            "Bytes a restream sent to its destination, every connection",
            labels=["live_job", "restream"],
        )
        restream_reconnects = CounterMetricFamily(
            "onair_restream_reconnects",
            "Times a restream connected again after a failure",
            labels=["live_job", "restream"],
        )
        restream_dropped = CounterMetricFamily(
            "onair_restream_dropped_packets",
            "Source packets a restream dropped, its destination too slow",
            labels=["live_job", "restream"],
        )
        srt_rtt = GaugeMetricFamily(
            "onair_job_srt_rtt_seconds",
            "SRT publishers: the connection's round-trip time",
            labels=["live_job"],
        )
        srt_packets = CounterMetricFamily(
            "onair_job_srt_packets",
            "SRT publishers: packets received, lost (the first time), retransmitted and"
            " dropped (too late: lost media), since the publisher connected",
            labels=["live_job", "kind"],
        )
        lives = 0
        for job_id, pipeline in self._pipelines():
            lives += 1
            job = str(job_id)
            source = pipeline.input_statistics()
            bitrate.add_metric([job, "video"], 1000.0 * source.video_data_rate)
            bitrate.add_metric([job, "audio"], 1000.0 * source.audio_data_rate)
            fps.add_metric([job], float(source.framerate))
            decoded.add_metric([job], pipeline.decoder.video_frames)
            dropped.add_metric([job, "", "ladder_behind"], pipeline.ingest_dropped_frames)
            for track, readers in pipeline.track_readers():
                for reader in readers:
                    reader_dropped.add_metric([job, track, reader.name], reader.dropped_total)
            published = pipeline.writer.stats()
            for row in pipeline.encoder.stats():
                name = row.name
                encoded.add_metric([job, name], row.frames_encoded)
                output_bitrate.add_metric([job, name], row.bitrate_bps)
                dropped.add_metric([job, name, "rendition_behind"], row.dropped_frames)
                rendition = published.get(name)
                segments.add_metric([job, name], rendition.segments if rendition else 0)
            buckets, total = pipeline.writer.upload_latency()
            latency.add_metric([job], buckets, total)
            spool.add_metric([job], pipeline.writer.spooled_bytes)
            outage.add_metric([job], 1.0 if pipeline.writer.outage else 0.0)
            current = pipeline.state
            for name in ("publishing", "waiting", "failed"):
                state.add_metric([job, name], 1.0 if name == current else 0.0)
            now = pipeline.health().state
            for health_state in HealthState:
                name = health_state.value.lower()
                health.add_metric([job, name], 1.0 if health_state is now else 0.0)
            transport = pipeline.transport_statistics()
            if transport is not None:
                srt_rtt.add_metric([job], transport.rtt_ms / 1000.0)
                for kind, count in (
                    ("received", transport.packets_received),
                    ("lost", transport.packets_lost),
                    ("retransmitted", transport.packets_retransmitted),
                    ("dropped", transport.packets_dropped),
                ):
                    srt_packets.add_metric([job, kind], count)
            for restream_id, forwarding in pipeline.restreams.statuses().items():
                labels = [job, str(restream_id)]
                for restream in RestreamState:
                    value = 1.0 if restream is forwarding.state else 0.0
                    restream_state.add_metric([*labels, restream.value], value)
                restream_bytes.add_metric(labels, forwarding.bytes_sent)
                restream_reconnects.add_metric(labels, forwarding.reconnects)
                restream_dropped.add_metric(labels, forwarding.dropped_packets)
        active = GaugeMetricFamily("onair_active_lives", "Live jobs with a running pipeline")
        active.add_metric([], lives)
        yield from (bitrate, fps, output_bitrate, decoded, dropped, reader_dropped, encoded)
        yield segments
        yield from (latency, spool, outage, state, health, active)
        yield from (restream_state, restream_bytes, restream_reconnects, restream_dropped)
        yield from (srt_rtt, srt_packets)
