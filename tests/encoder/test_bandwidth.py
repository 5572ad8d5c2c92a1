"""BANDWIDTH against a source that drives the encoder to its VBV cap.

High-motion noise makes x264 spend all that `maxrate` allows. Fed at a live pace (so
the low-latency drain opens a fresh encoder at every segment, as in production), no
segment a playlist lists may weigh more than the master's BANDWIDTH at that moment.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import m3u8
import pytest

from encoder.live_encoder import LiveEncoder
from encoder.templates import get_template
from ingest.media import MediaQueue
from packager import layout
from packager.hls import HlsWriter
from tests.support.fakes import CheckingStore, MemoryStore
from tests.support.media import feed

pytestmark = pytest.mark.slow  # encodes noise for tens of seconds

PREFIX = "live/motion"
ITEMS_PER_SECOND = 30 + 48_000 / 1024  # decoded video frames and AAC frames


def noise_source(path: Path, seconds: int) -> Path:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30,noise=alls=60:allf=t",
         "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "15M", "-g", "30",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def test_no_listed_segment_is_above_the_masters_bandwidth(tmp_path: Path) -> None:
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    writer = HlsWriter(store, "bucket", PREFIX, tmp_path / "spool", label="motion")
    queue = MediaQueue(120)
    encoder = LiveEncoder(get_template(2), queue, writer, label="motion")
    encoder.start()
    started = time.monotonic()

    def live_pace(offered: int) -> None:
        delay = started + offered / ITEMS_PER_SECOND - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    feed(noise_source(tmp_path / "noise.flv", 9), queue, on_item=live_pace)
    queue.close()
    encoder.stop()
    assert encoder.drains > 0  # the production path: a fresh x264 per segment

    variant = "360p"  # a 360p source: the only rung of template 2 it can feed
    assert list(writer.stats()) == [variant]
    sizes = {key: len(data) for key, (data, _, _) in memory.objects.items() if key.endswith(".ts")}
    master_key = layout.master_key(PREFIX)
    live_key = layout.live_playlist_key(PREFIX, variant)
    bandwidth: int | None = None
    peak = 0.0
    for key, text in store.playlist_puts:
        parsed = m3u8.loads(text)
        if key == master_key:
            bandwidth = parsed.playlists[0].stream_info.bandwidth
            continue
        if key != live_key or bandwidth is None:
            continue  # before the master, a player cannot have chosen this variant
        for segment in parsed.segments:
            if segment.duration < 1.0:
                continue  # the short last one: not a complete segment
            rate = sizes[f"{PREFIX}/{variant}/{segment.uri}"] * 8 / segment.duration
            peak = max(peak, rate)
            assert rate <= bandwidth, (segment.uri, rate, bandwidth)
    # The source did reach the cap (video maxrate 880k + audio 128k).
    assert peak >= 0.85 * 1_008_000, peak
