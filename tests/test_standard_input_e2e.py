"""The Standard input class through the whole service, with real publishers: two ffmpeg
CLIs (a 1280x720 30 fps test pattern as the primary, a solid blue 640x360 25 fps
backup, so the switch is visible in every picture) on one job. The primary is killed,
then comes back (failover, then failback after the configured time); in the other
scenario it stays connected and sends nothing (SIGSTOP). The output is read back
from the bucket: one timeline, no discontinuity, every rendition at its size and at
30 fps across the switches, at most one segment showing each switch, and ffmpeg
(strictly) and GStreamer's playbin playing it without a warning."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest

from tests.support.media import SMALL_RENDITIONS, SMALL_TEMPLATE, ffmpeg_warnings, ffprobe
from tests.support.monitoring import scrape
from tests.support.players import gst_play
from tests.support.service import Live, start_live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service

THRESHOLD_MS = 1000
FAILBACK_SECONDS = 4
FPS = 30
PLAYED = "180p"


@pytest.fixture
async def standard_live(tmp_path: Path, s3_server: Any, s3_client: Any) -> AsyncIterator[Live]:
    async for running in start_live(
        tmp_path, s3_server, s3_client, reconnect_window_seconds=30.0, input_loss_repeat_ms=500
    ):
        yield running


def publisher_cmd(url: str, source: str, seconds: float) -> list[str]:
    """ffmpeg publishing `source` (a lavfi video) with a tone, in real time, over RTMP."""
    return [
        *("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re"),
        *("-f", "lavfi", "-i", source),
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
        *("-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "30"),
        *("-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url),
    ]


PRIMARY_SOURCE = "testsrc2=size=1280x720:rate=30"
BACKUP_SOURCE = "color=c=blue:size=640x360:rate=25"


async def start(command: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGCONT)  # a stopped process takes SIGKILL too
        process.kill()
        await process.wait()


async def create_standard_job(live: Live, path: str) -> dict[str, Any]:
    job = await live.create_online_job(
        SMALL_TEMPLATE,
        "std-" + secrets.token_hex(4),
        path,
        inputClass=1,
        inputLossThresholdMs=THRESHOLD_MS,
        failbackAfterSeconds=FAILBACK_SECONDS,
    )
    assert job["backupIngestUrl"].endswith(f"/backup/{job['key']}")
    return job


async def start_both(
    live: Live, job: dict[str, Any], seconds_first: float
) -> tuple[asyncio.subprocess.Process, asyncio.subprocess.Process]:
    """Both publishers, once the live has encoded `seconds_first` from the primary."""
    primary_url, backup_url = urls(live, job)
    primary = await start(publisher_cmd(primary_url, PRIMARY_SOURCE, 60))
    backup = await start(publisher_cmd(backup_url, BACKUP_SOURCE, 60))
    await live.wait_status(job, 3)
    await wait_seconds_encoded(live, job, seconds_first)
    return primary, backup


def urls(live: Live, job: dict[str, Any]) -> tuple[str, str]:
    port = live.settings.rtmp_port
    return (
        f"rtmp://127.0.0.1:{port}/live/{job['key']}",
        f"rtmp://127.0.0.1:{port}/backup/{job['key']}",
    )


def when(timing: dict[str, Any]) -> float:
    return datetime.fromisoformat(timing["startDateTime"].replace("Z", "+00:00")).timestamp()


async def wait_timing(live: Live, job: dict[str, Any], child: str, within: float) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = [t for t in await live.timings(job) if t["childStatus"] == child]
        if found:
            return found[-1]
        assert asyncio.get_running_loop().time() < deadline, f"no {child} timing"
        await asyncio.sleep(0.1)


async def wait_seconds_encoded(live: Live, job: dict[str, Any], seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds + 30
    while await live.encoded_frames(job) < seconds * FPS:
        assert asyncio.get_running_loop().time() < deadline, await live.encoded_frames(job)
        await asyncio.sleep(0.1)


def is_backup(frame: av.VideoFrame) -> bool:
    """The backup is solid blue: a high, flat U plane."""
    # yuv420p as one array: the Y rows, then U's (packed two to a row), then V's
    u = frame.to_ndarray(format="yuv420p")[frame.height : frame.height + frame.height // 4]
    return float(u.mean()) > 200 and float(u.std()) < 8


def read_back(live: Live, job: dict[str, Any], rendition: str, scratch: Path) -> list[list[bool]]:
    """Each segment of the rendition's recording, as which of its frames are the backup's;
    checks the playlist first (no discontinuity) and each segment's size and rate."""
    bucket, prefix = job["bucket"], f"live/{job['input']['filePath']}/{rendition}"
    event = m3u8.loads(live.get_text(bucket, f"{prefix}/event.m3u8"))
    assert event.is_endlist
    assert not any(s.discontinuity for s in event.segments), rendition
    segments: list[list[bool]] = []
    pts: list[int] = []
    sizes: set[tuple[int, int]] = set()
    for number, segment in enumerate(event.segments):
        data = live.s3.get_object(Bucket=bucket, Key=f"{prefix}/{segment.uri}")["Body"].read()
        path = scratch / f"{rendition}-{number}.ts"
        path.write_bytes(data)
        probe, _ = ffprobe(path, "-show_streams")
        video = next(s for s in probe["streams"] if s["codec_type"] == "video")
        assert video["r_frame_rate"] == "30/1", (rendition, number, video["r_frame_rate"])
        sizes.add((video["width"], video["height"]))
        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
        pts += [f.pts for f in frames]
        segments.append([is_backup(f) for f in frames])
    assert len(sizes) == 1, (rendition, sizes)  # one size across the switches
    steps = [b - a for a, b in itertools.pairwise(pts)]
    # Exactly one frame interval between any two frames (the primary's millisecond
    # timestamps are put on the program's grid): no gap anywhere, 30 fps from either
    # input, and no segment longer than its 2 s across a switch.
    assert set(steps) == {3000}, sorted(set(steps))
    return segments


def played_key(job: dict[str, Any]) -> str:
    return f"live/{job['input']['filePath']}/{PLAYED}/event.m3u8"


def mixed(segments: list[list[bool]]) -> int:
    """Segments showing a switch (frames of both inputs)."""
    return sum(1 for frames in segments if any(frames) and not all(frames))


async def test_failover_when_the_primary_dies_and_failback_when_it_is_clean_again(
    standard_live: Live, tmp_path: Path
) -> None:
    live = standard_live
    job = await create_standard_job(live, "failover")
    primary_url = urls(live, job)[0]
    primary, backup = await start_both(live, job, 6)
    try:
        stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        inputs = {i["name"]: i for i in stats["inputs"]}
        assert inputs["primary"]["active"] and inputs["backup"]["connected"], inputs
        killed = datetime.now().timestamp()
        primary.kill()
        await primary.wait()
        failover = await wait_timing(live, job, "InputFailover", 10)
        print(f"InputFailover {when(failover) - killed:.3f} s after the primary was killed")
        assert when(failover) - killed <= THRESHOLD_MS / 1000 + 0.5, failover
        assert "primary -> backup" in failover["messageComment"], failover
        samples = await scrape(live)
        assert samples[("onair_input_switches_total", (("kind", "InputFailover"),))] == 1
        await asyncio.sleep(3)  # on the backup
        primary = await start(publisher_cmd(primary_url, PRIMARY_SOURCE, 60))
        back = datetime.now().timestamp()
        failback = await wait_timing(live, job, "InputFailback", FAILBACK_SECONDS + 20)
        print(f"InputFailback {when(failback) - back:.3f} s after the primary was back")
        assert FAILBACK_SECONDS <= when(failback) - back <= FAILBACK_SECONDS + 4, failback
        assert "backup -> primary" in failback["messageComment"], failback
        await asyncio.sleep(3)
        stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        assert {i["name"]: i["active"] for i in stats["inputs"]} == {
            "primary": True,
            "backup": False,
        }
        assert await live.status(job) == 3  # Live throughout: one input was always there
    finally:
        await stop(backup)  # the standby first: no switch at the end
        await stop(primary)
    await live.wait_status(job, 4)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    statuses = [t["childStatus"] for t in await live.timings(job)]
    assert statuses.count("InputFailover") == 1 and statuses.count("InputFailback") == 1
    for rendition in SMALL_RENDITIONS:
        segments = read_back(live, job, rendition, tmp_path)
        shown = [frame for frames in segments for frame in frames]
        assert any(shown) and not shown[-1], rendition  # the backup, then the primary again
        assert mixed(segments) <= 2, (rendition, [sum(s) for s in segments])  # one a switch
    played = job["storageMasterFile"].rsplit("/", 1)[0] + f"/{PLAYED}/event.m3u8"
    assert ffmpeg_warnings(played, strict=True) == ""
    lasts = sum(
        s.duration for s in m3u8.loads(live.get_text(job["bucket"], played_key(job))).segments
    )
    run = await asyncio.to_thread(gst_play, played, lasts, 60)
    report = run.report()
    assert run.played_seconds >= lasts - 0.5 and not run.discontinuity_warnings, report
    assert run.frame_rates <= {"30/1"}, report
    assert not [w for w in run.warnings if "EXTINF" in w or "TARGETDURATION" in w], report


async def test_a_primary_that_stays_connected_and_sends_nothing_fails_over(
    standard_live: Live, tmp_path: Path
) -> None:
    live = standard_live
    job = await create_standard_job(live, "stopped")
    primary, backup = await start_both(live, job, 5)
    try:
        stopped = datetime.now().timestamp()
        primary.send_signal(signal.SIGSTOP)  # connected, sending nothing
        failover = await wait_timing(live, job, "InputFailover", 10)
        print(f"InputFailover {when(failover) - stopped:.3f} s after the primary was stopped")
        assert when(failover) - stopped <= THRESHOLD_MS / 1000 + 0.5, failover
        assert "no media" in failover["messageComment"], failover
        await asyncio.sleep(3)
        assert await live.status(job) == 3
    finally:
        await stop(primary)
        await stop(backup)
    await live.wait_status(job, 4)
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    for rendition in SMALL_RENDITIONS:
        segments = read_back(live, job, rendition, tmp_path)
        shown = [frame for frames in segments for frame in frames]
        first = shown.index(True)
        # The primary, then the backup until both publishers were stopped (after it,
        # the fill: its last picture, then the slate).
        assert sum(shown[first:]) >= 3 * FPS and all(shown[first : first + 3 * FPS]), rendition
        assert not any(shown[:first]), rendition
        assert mixed(segments) <= 2, (rendition, [sum(s) for s in segments])  # + the slate
