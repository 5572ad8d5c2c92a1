"""SRT ingest through the whole service, with real SRT clients: Debian's ffmpeg CLI and
`srt-live-transmit` publishing 720p at once to two jobs on the one UDP port; wrong keys
and passphrases refused in the handshake; 5 % loss both ways at 120 ms latency."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import SMALL_RENDITIONS, SMALL_TEMPLATE
from tests.support.monitoring import Samples, scrape
from tests.support.publishers import ffmpeg_publish_cmd, run_process
from tests.support.service import Live
from tests.support.srt import LossyRelay, feed_paced, live_transmit_cmd, pad_to_datagrams

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # real time, the whole service

FPS = 30
SIZE = "1280x720"


async def create_srt_job(live: Live, path: str, **extra: Any) -> dict[str, Any]:
    job = (
        await live.call(
            "POST",
            "/livejobs",
            json={
                "jobTemplateId": SMALL_TEMPLATE,
                "destination": "live",
                "bucket": "srt-" + secrets.token_hex(4),
                "input": {"filePath": path, "serverType": 1, "inputClass": 0, **extra},
            },
        )
    )["result"]
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    return job  # type: ignore[no-any-return]


def ffmpeg_srt_cmd(url: str, seconds: float, size: str = SIZE) -> list[str]:
    """ffmpeg as an SRT publisher in real time; `linger` lets its last packets out."""
    return ffmpeg_publish_cmd(
        url,
        size=size,
        seconds=seconds,
        realtime=True,
        extra=("-pix_fmt", "yuv420p"),
        output=("-f", "mpegts", url + "&latency=120000&linger=2"),
    )


async def run(command: list[str], within: float) -> int:
    return (await run_process(command, within))[0]


async def live_transmit(port: int, key: str, ts: bytes, bytes_per_second: float) -> None:
    """srt-live-transmit sending `ts` from its stdin in real time, then killed (at the end
    of its input it neither closes nor exits: Debian's 1.5.1)."""
    process = await asyncio.create_subprocess_exec(
        *live_transmit_cmd(port, key, linger="2"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdin is not None
    try:
        await feed_paced(process.stdin, pad_to_datagrams(ts), bytes_per_second=bytes_per_second)
        process.stdin.close()
        await asyncio.sleep(3)  # its linger: what it holds goes out
    finally:
        process.kill()
        await process.wait()


async def wait_encoded(live: Live, job: dict[str, Any], frames: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while await live.encoded_frames(job) < frames:
        assert time.monotonic() < deadline, (await live.encoded_frames(job), frames)
        await asyncio.sleep(0.2)


async def test_ffmpeg_and_srt_live_transmit_publish_720p_at_once_on_one_port(
    live: Live, tmp_path: Path
) -> None:
    seconds = 10
    by_ffmpeg = await create_srt_job(live, "by-ffmpeg")
    by_tool = await create_srt_job(live, "by-tool")
    assert by_ffmpeg["ingestUrl"].startswith(f"srt://127.0.0.1:{live.settings.srt_port}?")
    source = tmp_path / "source.ts"
    made = await asyncio.to_thread(
        subprocess.run,
        ffmpeg_publish_cmd(
            str(source),
            size=SIZE,
            seconds=seconds,
            extra=("-pix_fmt", "yuv420p", "-b:v", "2M"),
            output=("-f", "mpegts", str(source)),
        ),
        capture_output=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    rate = source.stat().st_size / seconds

    ffmpeg_done, _ = await asyncio.gather(
        run(ffmpeg_srt_cmd(by_ffmpeg["ingestUrl"], seconds), within=60),
        live_transmit(live.settings.srt_port, by_tool["key"], source.read_bytes(), rate),
    )
    assert ffmpeg_done == 0
    for job in (by_ffmpeg, by_tool):
        await wait_encoded(live, job, seconds * FPS)
        stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        assert (stats["width"], stats["height"]) == (1280, 720)
        assert (stats["videoCodecId"], stats["audioCodecId"]) == (7, 10)  # as RTMP's (FLV ids)
        await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
        counts = live.recorded_video_packets(job, SMALL_RENDITIONS, tmp_path)
        # srt-live-transmit never closes at the end of its input: the decoder's last
        # frames (held for B-frame reordering) come out only when it is killed, after the
        # silence was filled, and the fill had their time (at most 8, the reorder depth).
        late = 8 if job is by_tool else 0
        await live.assert_recorded_whole(job, counts, seconds * FPS, late=late)
        statuses = [t["childStatus"] for t in await live.timings(job)]
        assert "PublisherConnected" in statuses and "MediaStarted" in statuses


async def test_wrong_keys_and_passphrases_are_refused_before_any_media(live: Live) -> None:
    secret = "correct-horse-battery"
    guarded = await create_srt_job(live, "guarded", srtPassphrase=secret)
    url = guarded["ingestUrl"]
    unknown = url.replace(guarded["key"], secrets.token_hex(16))
    attempts = [
        unknown,  # no such key
        url + "&passphrase=wrong-horse-battery",  # libsrt refuses it
        url,  # no passphrase where one is set
    ]
    for attempt in attempts:
        code = await run(ffmpeg_srt_cmd(attempt, 2, size="320x180"), within=30)
        assert code != 0, attempt
    assert (await live.call("GET", f"/livejobs/{guarded['id']}"))["result"]["status"] == 2
    statuses = [t["childStatus"] for t in await live.timings(guarded)]
    assert "PublisherConnected" not in statuses and "MediaStarted" not in statuses

    offline = await create_srt_job(live, "offline")
    await live.call("POST", f"/livejobs/{offline['key']}", json={"online": False})
    assert await run(ffmpeg_srt_cmd(offline["ingestUrl"], 2, size="320x180"), within=30) != 0
    refused = [
        t["messageComment"]
        for t in await live.timings(offline)
        if t["childStatus"] == "PublisherRefused"
    ]
    assert refused and "offline" in refused[0], refused

    # The right passphrase: admitted, and never shown in full.
    assert await run(ffmpeg_srt_cmd(url + f"&passphrase={secret}", 3, size="320x180"), 30) == 0
    await wait_encoded(live, guarded, 60)
    shown = await live.call("GET", f"/livejobs/{guarded['id']}")
    assert secret not in str(shown) and shown["result"]["input"]["srtPassphrase"] == "co…"


async def test_five_percent_loss_each_way_at_120_ms_still_gives_the_whole_output(
    live: Live, tmp_path: Path
) -> None:
    seconds = 8
    job = await create_srt_job(live, "lossy")
    relay = LossyRelay(("127.0.0.1", live.settings.srt_port), 0.05, seed=7)
    port = await relay.start()
    transport: dict[str, Any] | None = None
    metrics: Samples = {}
    try:
        url = job["ingestUrl"].replace(f":{live.settings.srt_port}?", f":{port}?")
        publishing = asyncio.create_task(
            run(ffmpeg_srt_cmd(url, seconds, size="640x360"), within=60)
        )
        await live.wait_status(job, 3, within=20)
        while not publishing.done():  # SRT's own figures, the last seen while connected
            stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
            if stats["transport"]:
                transport, metrics = stats["transport"], await scrape(live)
            await asyncio.sleep(0.3)
        assert await publishing == 0
    finally:
        await relay.stop()
    assert transport is not None and transport["packetsReceived"] > 0
    ours = ("live_job", str(job["id"]))
    assert metrics[("onair_job_srt_packets_total", (("kind", "received"), ours))] > 0
    assert metrics[("onair_job_srt_rtt_seconds", (ours,))] >= 0
    assert relay.to_server.counts.dropped > 0 and relay.to_publisher.counts.dropped > 0
    await live.wait_status(job, 4)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    counts = live.recorded_video_packets(job, SMALL_RENDITIONS, tmp_path)
    filled = await live.fill_frames(job)  # the publisher's end, before going offline
    assert transport["packetsLost"] > 0 and transport["packetsRetransmitted"] > 0, transport
    if transport["packetsDropped"]:  # too late for the latency: the stats say it was lost
        assert all(0 < n <= seconds * FPS + filled for n in counts.values()), counts
    else:
        wanted = {r: seconds * FPS + filled for r in SMALL_RENDITIONS}
        assert counts == wanted, (counts, filled, transport)
