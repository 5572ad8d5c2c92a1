"""Per-job metrics on `/metrics`: read from the running pipelines at each scrape.

A custom collector rather than labelled counters kept up to date: each series exists
while its job's pipeline runs and is gone once the job goes offline (no series left
behind over days of jobs), and nothing is counted twice. Labels are bounded: the job
id, a rendition name, a track and reader name, a reason; never a stream key or a URL.
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
            labels=["job", "kind"],
        )
        fps = GaugeMetricFamily("onair_job_input_fps", "Source frame rate", labels=["job"])
        decoded = CounterMetricFamily(
            "onair_job_frames_decoded", "Video frames the decoder produced", labels=["job"]
        )
        dropped = CounterMetricFamily(
            "onair_job_frames_dropped",
            "Video frames dropped: before the ladder (ladder_behind) or by one rendition"
            " (rendition_behind)",
            labels=["job", "rendition", "reason"],
        )
        reader_dropped = CounterMetricFamily(
            "onair_job_reader_dropped",
            "Items a reader of one of the live's tracks was too slow to take",
            labels=["job", "track", "reader"],
        )
        segments = CounterMetricFamily(
            "onair_job_segments_published",
            "Segments stored and listed, the whole recording",
            labels=["job", "rendition"],
        )
        encoded = CounterMetricFamily(
            "onair_job_frames_encoded", "Video frames encoded", labels=["job", "rendition"]
        )
        latency = HistogramMetricFamily(
            "onair_job_upload_seconds",
            "How long each segment's upload to the object store took",
            labels=["job"],
        )
        spool = GaugeMetricFamily(
            "onair_job_spool_bytes", "Bytes spooled, not yet uploaded", labels=["job"]
        )
        state = GaugeMetricFamily(
            "onair_job_pipeline_state",
            "1 for the pipeline's state: publishing, waiting (no publisher) or failed",
            labels=["job", "state"],
        )
        lives = 0
        for job_id, pipeline in self._pipelines():
            lives += 1
            job = str(job_id)
            source = pipeline.input_statistics()
            bitrate.add_metric([job, "video"], 1000.0 * float(source.get("videoDataRate") or 0))
            bitrate.add_metric([job, "audio"], 1000.0 * float(source.get("audioDataRate") or 0))
            fps.add_metric([job], float(source.get("framerate") or 0))
            decoded.add_metric([job], pipeline.decoder.video_frames)
            dropped.add_metric([job, "", "ladder_behind"], pipeline.ingest_dropped_frames)
            for track, readers in pipeline.track_readers():
                for reader in readers:
                    reader_dropped.add_metric([job, track, reader.name], reader.dropped_total)
            published = pipeline.writer.stats()
            for row in pipeline.encoder.stats():
                name = str(row["name"])
                encoded.add_metric([job, name], int(row.get("framesEncoded", 0)))
                dropped.add_metric(
                    [job, name, "rendition_behind"], int(row.get("droppedFrames", 0))
                )
                segments.add_metric([job, name], int(published.get(name, {}).get("segments", 0)))
            buckets, total = pipeline.writer.upload_latency()
            latency.add_metric([job], buckets, total)
            spool.add_metric([job], pipeline.writer.spooled_bytes)
            current = pipeline.state
            for name in ("publishing", "waiting", "failed"):
                state.add_metric([job, name], 1.0 if name == current else 0.0)
        active = GaugeMetricFamily("onair_active_lives", "Live jobs with a running pipeline")
        active.add_metric([], lives)
        yield from (bitrate, fps, decoded, dropped, reader_dropped, encoded, segments)
        yield from (latency, spool, state, active)
