"""A publisher faster than the pipeline (ffmpeg pushing a file, no `-re`) is slowed by
TCP's flow control, and loses nothing: the server stops reading while the session's
feed is full, the decoder waits for a pacing reader that is behind, and the
acknowledgements that would reach the publisher after its last write (a close with
unread data is a TCP reset, which throws the stream's tail away) are not sent."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

import av
import pytest

from ingest.adapter import DecoderSession
from ingest.decode import LiveDecoder
from ingest.media import MediaQueue
from ingest.session import PublishRequest, PublishSession
from media.fanout import QueueClosed
from tests.support.publishers import ffmpeg_publish_cmd, run_process
from tests.support.rtmp_client import StartServer
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.slow  # publishers held back for seconds

SECONDS = 8


@pytest.fixture(scope="module")
def dense_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 320x240 H.264 at 8 Mbit/s (CBR filler) + AAC, as FLV: ~8 MB, many times
    the feed's cap and three acknowledgement windows (2.5 MB)."""
    path = tmp_path_factory.mktemp("dense") / "dense.flv"
    cmd = ffmpeg_publish_cmd(
        "",
        seconds=SECONDS,
        extra=["-b:v", "8M", "-maxrate", "8M", "-bufsize", "8M", "-x264-params", "nal-hrd=cbr"],
    )
    subprocess.run([*cmd[:-3], "-f", "flv", str(path)], check=True, timeout=60)
    return path


class WaitCounting(DecoderSession):
    """The production session adapter, counting the waits it asked the server for."""

    waits = 0

    def wait_for_room(self) -> Awaitable[None] | None:
        room = super().wait_for_room()
        if room is not None:
            WaitCounting.waits += 1
        return room


class SlowReader:
    """Takes one item every 2 ms (the source comes in as fast as ffmpeg reads a file)."""

    def __init__(self, queue: MediaQueue) -> None:
        self.queue = queue
        self.video = 0
        self.audio = 0
        self.ended = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            while True:
                item = self.queue.get(0.1)
                if isinstance(item, av.Packet) and item.size:
                    if item.stream.type == "video":
                        self.video += 1
                    else:
                        self.audio += 1
                    time.sleep(0.002)
        except QueueClosed:
            self.ended.set()


async def test_a_file_pushed_as_fast_as_it_goes_arrives_whole(
    start_server: StartServer, dense_source: Path
) -> None:
    # Passthrough (packets): the count is exact. A 20-item pacing queue and a 256 KiB
    # feed: the source overruns both many times over.
    queue = MediaQueue(max_items=20)
    decoder = LiveDecoder(queue, decode=False, label="fast", max_buffered_bytes=256 * 1024)
    reader = SlowReader(queue)
    closes: list[str] = []
    WaitCounting.waits = 0

    async def admit(request: PublishRequest) -> PublishSession:
        return WaitCounting(decoder, request, on_closed=lambda _, reason: closes.append(reason))

    server = await start_server(admit=admit)
    url = f"rtmp://127.0.0.1:{server.port}/live/fast"
    started = time.monotonic()
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(dense_source)]
    rc, stderr = await run_process([*cmd, "-c", "copy", "-f", "flv", url])
    assert rc == 0, stderr
    await async_wait_until(lambda: bool(closes), 30, "the session's end")
    decoder.stop()
    queue.close()
    assert reader.ended.wait(30)

    assert closes == ["unpublished"]  # not "connection reset by peer"
    assert reader.video == SECONDS * 30
    assert reader.audio >= SECONDS * 48000 // 1024
    assert queue.dropped == 0
    assert decoder.dropped_writes == 0
    assert WaitCounting.waits > 0  # the server did hold the publisher back
    # and the publisher was slowed to the reader's pace: ~1,000 items at 2 ms each
    assert time.monotonic() - started > 1.5


async def test_a_source_in_real_time_that_the_reader_cannot_follow_still_drops(
    start_server: StartServer,
) -> None:
    """Latency stays bounded: media late for its real-time instant is dropped at the
    pacing reader, not waited for (and so the publisher is never held back)."""
    queue = MediaQueue(max_items=5)
    decoder = LiveDecoder(queue, label="late")
    taken = 0
    stop = threading.Event()

    def stalled() -> None:  # reads one frame per 200 ms: far behind 30 fps
        nonlocal taken
        while not stop.is_set():
            if queue.get(0.1) is not None:
                taken += 1
                time.sleep(0.2)

    threading.Thread(target=stalled, daemon=True).start()
    closes: list[str] = []

    async def admit(request: PublishRequest) -> PublishSession:
        return DecoderSession(decoder, request, on_closed=lambda _, reason: closes.append(reason))

    server = await start_server(admit=admit)
    url = f"rtmp://127.0.0.1:{server.port}/live/late"
    started = time.monotonic()
    rc, stderr = await run_process(ffmpeg_publish_cmd(url, seconds=3, realtime=True))
    assert rc == 0, stderr
    assert time.monotonic() - started < 3 + 2.5  # not held back by the stalled reader
    await async_wait_until(lambda: bool(closes), 10, "the session's end")
    stop.set()
    decoder.stop()
    assert queue.dropped_video > 30
    assert closes == ["unpublished"]


async def test_a_pipeline_that_takes_nothing_ends_the_connection(
    start_server: StartServer, dense_source: Path
) -> None:
    """Held back without end (a stuck pipeline): the connection is closed after the
    server's `room_timeout_seconds`, with the reason; the server goes on."""
    closes: list[str] = []

    class Stuck:
        def on_metadata(self, metadata: object) -> None: ...

        def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None: ...

        def on_data(self, data: bytes) -> None: ...

        def wait_for_room(self) -> Awaitable[None] | None:
            return asyncio.get_running_loop().create_future()  # never done

        def on_close(self, reason: str) -> None:
            closes.append(reason)

    async def admit(request: PublishRequest) -> PublishSession:
        return Stuck()  # type: ignore[return-value]

    server = await start_server(admit=admit, room_timeout_seconds=0.5)
    url = f"rtmp://127.0.0.1:{server.port}/live/stuck"
    started = time.monotonic()
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(dense_source)]
    rc, _ = await run_process([*cmd, "-c", "copy", "-f", "flv", url], within=30)
    assert rc != 0
    assert time.monotonic() - started < 10
    assert closes == ["session error: the pipeline took no media for 0.5 s"]
