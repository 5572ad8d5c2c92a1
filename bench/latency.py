"""Latency: from the last frame of segment N being sent to segment N listed in the playlist.

onair: `onair run` (embedded SeaweedFS) with a template-2 job; a PyAV publisher sends a
720p30 source over RTMP in real time and records when each video frame leaves; a poller
GETs the 720p live playlist from the bucket every 50 ms. ffmpeg CLI: the same source
read with `-re` into the same ladder as a live HLS playlist on local disk, polled the
same way (its send time is estimated as process start + media time, which slightly
favours onair's exact measurement: the difference is ffmpeg's start-up, ~0.1 s).

Prints p50/p95 of each, and the ratio. Then the WebSocket viewing beside it, glass to
glass: a PyAV publisher paints its send time into every 720p picture
(`tests/support/clock_publisher.py`), mpegts.js in Debian's Chromium plays the job's
`webSocketConnection` (`rendition=source`, then the 720p rendition) and reads the time
back from the video element (`tests/players/mpegts_page.html`): the median of its
samples. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import m3u8

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import Onair, percentile, source_720p
from throughput import ffmpeg_ladder_command

from encoder.ladder import plan_ladder
from encoder.templates import get_template
from tests.support.live_rig import page_app
from tests.support.players import watch_websocket

REPO = Path(__file__).resolve().parent.parent
CLOCK_PUBLISHER = REPO / "tests" / "support" / "clock_publisher.py"
MPEGTS_PAGE = REPO / "tests" / "players" / "mpegts_page.html"
MPEGTS_JS = REPO / "node_modules" / "mpegts.js" / "dist" / "mpegts.js"

POLL_SECONDS = 0.05


def publish_realtime(url: str, source: Path, sent: list[tuple[float, float]]) -> None:
    """Send `source` packet by packet at its own pace; record (media s, wall) per video frame."""
    with av.open(str(source)) as inp, av.open(url, "w", format="flv") as out:
        mapping = {
            s.index: out.add_stream_from_template(s)
            for s in inp.streams
            if s.type in ("video", "audio")
        }
        start_wall: float | None = None
        first: float | None = None
        for packet in inp.demux():
            if packet.dts is None or packet.stream.index not in mapping:
                continue
            media = float(packet.dts * packet.time_base)
            if first is None:
                first, start_wall = media, time.monotonic()
            assert start_wall is not None
            delay = start_wall + (media - first) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stream = packet.stream
            packet.stream = mapping[stream.index]
            out.mux(packet)
            if stream.type == "video" and packet.pts is not None:
                sent.append((float(packet.pts * packet.time_base) - first, time.monotonic()))


def poll_playlist(
    read: object, stop: threading.Event, listed: dict[int, tuple[float, float]]
) -> None:
    """Record, for each sequence number, (segment duration, wall time first listed)."""
    while not stop.is_set():
        try:
            text = read()  # type: ignore[operator]
        except Exception:
            text = None
        now = time.monotonic()
        if text:
            playlist = m3u8.loads(text)
            for offset, segment in enumerate(playlist.segments):
                sequence = (playlist.media_sequence or 0) + offset
                listed.setdefault(sequence, (float(segment.duration), now))
        time.sleep(POLL_SECONDS)


def latencies(
    listed: dict[int, tuple[float, float]], sent: list[tuple[float, float]], fps: float = 30.0
) -> list[float]:
    """Per complete segment: listed time - send time of its last frame."""
    sent.sort()
    media = [m for m, _ in sent]
    out = []
    end = 0.0
    sequences = sorted(listed)
    for sequence in sequences[:-1]:  # the last one is flushed at the end of the live
        duration, when = listed[sequence]
        end += duration
        index = bisect.bisect_right(media, end - 1.0 / fps + 1e-3) - 1
        if index >= 0:
            out.append(when - sent[index][1])
    return out


def run_onair(source: Path, work: Path) -> list[float]:
    service = Onair(work / "onair")
    try:
        job = service.create_online_job(2, "bench-latency", "lat")
        key = "bench/lat/720p/index.m3u8"

        def read() -> str:
            body = service.s3.get_object(Bucket="bench-latency", Key=key)["Body"]
            return body.read().decode()  # type: ignore[no-any-return]

        sent: list[tuple[float, float]] = []
        listed: dict[int, tuple[float, float]] = {}
        stop = threading.Event()
        poller = threading.Thread(target=poll_playlist, args=(read, stop, listed), daemon=True)
        poller.start()
        publish_realtime(service.rtmp_url(job["key"]), source, sent)
        time.sleep(3)
        stop.set()
        poller.join()
        service.offline(job)
        return latencies(listed, sent)
    finally:
        service.stop()


def run_ffmpeg(source: Path, work: Path) -> list[float]:
    import subprocess

    template = get_template(2)
    plans = plan_ladder(template, 1280, 720)
    out_dir = work / "ffmpeg"
    out_dir.mkdir()
    command = ffmpeg_ladder_command(source, template, plans, out_dir)
    command.insert(command.index("-i"), "-re")
    at = command.index("-hls_playlist_type")
    command[at : at + 2] = ["-hls_list_size", "6"]
    playlist = out_dir / "v0.m3u8"
    listed: dict[int, tuple[float, float]] = {}
    stop = threading.Event()
    poller = threading.Thread(
        target=poll_playlist,
        args=(lambda: playlist.read_text() if playlist.exists() else None, stop, listed),
        daemon=True,
    )
    poller.start()
    started = time.monotonic()
    subprocess.run(command, check=True)
    stop.set()
    poller.join()
    # ffmpeg -re sends frame t at about start + t.
    sent = [(i / 30.0, started + i / 30.0) for i in range(30 * 3600)]
    return latencies(listed, sent)


def serve_page(port: int, stop: threading.Event) -> None:
    """The mpegts.js page and its script, from an origin of their own (a thread's loop)."""
    import asyncio

    from aiohttp import web

    async def run() -> None:
        runner = web.AppRunner(page_app(MPEGTS_PAGE.read_text(), MPEGTS_JS, "mpegts.js"))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    asyncio.run(run())


def run_websocket(work: Path, seconds: int) -> dict[str, float]:
    """Glass-to-glass medians (s) of the source and the 720p rendition over WebSocket."""
    import subprocess

    from tests.support.ports import free_port

    service = Onair(work / "onair-ws")
    stop = threading.Event()
    port = free_port()
    page = threading.Thread(target=serve_page, args=(port, stop), daemon=True)
    page.start()
    publisher = None
    try:
        job = service.create_online_job(2, "bench-glass", "glass")
        publisher = subprocess.Popen(
            [sys.executable, str(CLOCK_PUBLISHER), service.rtmp_url(job["key"]),
             str(seconds + 20), "1280", "720"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(4)  # Live, a keyframe or two
        base = f"ws://127.0.0.1:{service.http_port}/websocketplay/{job['name']}"
        states = watch_websocket(
            f"http://127.0.0.1:{port}/", [f"{base}?rendition=source", base], seconds / 2
        )
        return {
            name: percentile([v / 1000 for v in state["latencies"]], 0.5)
            for name, state in zip(("source", "720p"), states, strict=True)
            if state["latencies"]
        }
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        stop.set()
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    source = source_720p(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours = run_onair(source, work)
        theirs = run_ffmpeg(source, work)
        glass = run_websocket(work, min(args.seconds, 20))
    print(f"latency, segment end -> listed ({len(ours)} onair / {len(theirs)} ffmpeg segments)")
    for name, values in (("onair  (S3 playlist)", ours), ("ffmpeg (local disk) ", theirs)):
        p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
        print(f"  {name}   p50 {p50:.3f} s   p95 {p95:.3f} s")
    if theirs:
        print(f"  ratio p95 onair/ffmpeg {percentile(ours, 0.95) / percentile(theirs, 0.95):.2f}")
    print("latency, glass to glass (WebSocket, mpegts.js in Chromium, loopback, median)")
    for name, value in glass.items():
        print(f"  onair WebSocket {name:7s} {value:.3f} s")
    hls = percentile(ours, 0.5)
    print(f"  beside: an HLS segment is listed {hls:.3f} s after its end (p50); a player")
    print("  starts three segments behind the edge (hls.js's default)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
