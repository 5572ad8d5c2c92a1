"""Restreams through the whole service into real RTMP servers nobody here wrote: nginx
with its RTMP module (`record all`), RTMPS through nginx `stream` with TLS, a
destination that stops, one that never reads, one that refuses the key; toggles and
deletes while live; a publisher blip bridged by the slate on the same connection."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.views import LIVE_JOBS_KEY
from media.outbound import OutboundPolicy
from packager.s3server import EmbeddedS3
from restream.forwarder import QUEUE_BYTES
from tests.support.media import SMALL_TEMPLATE, ffmpeg_warnings
from tests.support.monitoring import RESTREAM_SERIES, queried_metrics, scrape
from tests.support.nginx import NginxRtmp
from tests.support.publishers import publish
from tests.support.service import Live, start_live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service

FPS = 30


@pytest.fixture
async def live(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any, nginx: NginxRtmp
) -> AsyncIterator[Live]:
    """The whole service; outbound connections may reach loopback (the test's nginx)
    and trust the test's CA (its RTMPS front)."""
    policy = OutboundPolicy(allow_private=True, ca_file=nginx.ca_file)
    async for running in start_live(
        tmp_path, s3_server, s3_client, reconnect_window_seconds=20.0, outbound=policy
    ):
        yield running


# -- the API, as a broadcaster calls it ----------------------------------------------------


async def api(live: Live, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    base = str(live.server.make_url("")).rstrip("/") + f"/api/v1/{live.project.id}"
    async with live.session.request(
        method, base + path, headers=live.project.headers, **kwargs
    ) as response:
        return response.status, await response.json()


async def add_restream(live: Live, job: dict[str, Any], url: str, key: str) -> dict[str, Any]:
    body = {"videoId": job["name"], "title": f"to {url}", "streamUrl": url, "streamKey": key}
    status, answer = await api(live, "POST", "/restreams", json={**body, "status": True})
    assert status == 201, answer
    return answer["result"]  # type: ignore[no-any-return]


async def restreams_of(live: Live, job: dict[str, Any]) -> dict[int, dict[str, Any]]:
    status, answer = await api(live, "GET", f"/live-video/{job['name']}/restreams")
    assert status == 200, answer
    return {int(r["id"]): r for r in answer["result"]}


async def wait_state(
    live: Live, job: dict[str, Any], restream: dict[str, Any], state: str, within: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (found := (await restreams_of(live, job))[int(restream["id"])])["state"] != state:
        assert time.monotonic() < deadline, f"restream not {state} in {within} s: {found}"
        await asyncio.sleep(0.1)
    return found


async def restream_timings(live: Live, job: dict[str, Any]) -> list[tuple[str, str]]:
    rows = await live.timings(job)
    return [
        (t["childStatus"], t["messageComment"])
        for t in rows
        if t["childStatus"].startswith("Restream")
    ]


def new_key() -> str:
    return "live_" + secrets.token_hex(12)  # like a platform's: secret, unguessable


# -- what a recording holds ------------------------------------------------------------------


def probe(path: Path) -> dict[str, list[float]]:
    """pts (s) of every decoded frame of the FLV, by stream kind."""
    result = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-of", "json"),
            *("-show_entries", "frame=media_type,pts_time", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    frames = json.loads(result.stdout or "{}").get("frames", [])
    found: dict[str, list[float]] = {"video": [], "audio": []}
    for frame in frames:
        if "pts_time" in frame:
            found[frame["media_type"]].append(float(frame["pts_time"]))
    return found


def assert_every_source_frame(frames: dict[str, list[float]], seconds: float) -> None:
    """The first `seconds` of the recording are the source's frames, every one, in
    order at 30 fps from its start (0, or the B-frames' composition delay), with the
    audio beside them (A/V start and end together)."""
    video = sorted(frames["video"])
    first = video[0]
    assert first < 3 / FPS, first
    source = [t for t in video if t < first + seconds - 0.5 / FPS]
    assert len(source) == round(seconds * FPS), (len(source), source[:3], source[-3:])
    steps = np.diff(source)
    assert steps.max() < 1.5 / FPS, f"a frame is missing near {source[int(steps.argmax())]} s"
    audio = sorted(frames["audio"])
    assert abs(audio[0] - first) < 3 / FPS
    assert audio[-1] >= source[-1] - 0.05


def grep_logs(caplog: pytest.LogCaptureFixture, *secrets_: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in secrets_)]


# -- scenarios -----------------------------------------------------------------------------------


async def test_two_restreams_rtmp_and_rtmps_carry_every_source_frame(
    live: Live, nginx: NginxRtmp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    job = await live.create_online_job(SMALL_TEMPLATE, "rs-" + secrets.token_hex(4), "two")
    plain_key, tls_key = new_key(), new_key()
    plain = await add_restream(live, job, nginx.rtmp_url("live1"), plain_key)
    tls = await add_restream(live, job, nginx.rtmps_url("live2"), tls_key)
    assert plain["state"] == "idle" and plain["streamKey"] == plain_key

    seconds = 12
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), seconds))
    for restream in (plain, tls):
        forwarding = await wait_state(live, job, restream, "forwarding")
        assert forwarding["connectedSince"] is not None and forwarding["lastError"] is None
    await asyncio.sleep(3)
    during = await restreams_of(live, job)
    assert all(r["bytesSent"] > 0 and r["bitrate"] > 0 for r in during.values()), during
    metrics = await scrape(live)
    names = {name for name, _ in metrics}
    assert RESTREAM_SERIES <= names and RESTREAM_SERIES & queried_metrics() == RESTREAM_SERIES
    for restream in (plain, tls):
        labels = (("live_job", str(job["id"])), ("restream", str(restream["id"])))
        assert metrics[("onair_restream_state", (*labels, ("state", "forwarding")))] == 1
        assert metrics[("onair_restream_sent_bytes_total", labels)] > 0
    assert not any(k in str(metrics) for k in (plain_key, tls_key))
    done = await publisher
    assert done.returncode == 0, done.stderr
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    for restream in (plain, tls):
        await wait_state(live, job, restream, "idle")

    for app, key in (("live1", plain_key), ("live2", tls_key)):
        recording = nginx.recording(app, key)
        assert ffmpeg_warnings(recording) == ""
        assert_every_source_frame(probe(recording), seconds)

    timings = await restream_timings(live, job)
    for restream in (plain, tls):
        mine = [status for status, message in timings if f"restream {restream['id']} " in message]
        assert mine[:2] == ["RestreamConnecting", "RestreamConnected"], timings
        assert mine[-1] == "RestreamStopped", timings
    assert grep_logs(caplog, plain_key, tls_key) == []
    assert not any(k in str(timings) for k in (plain_key, tls_key))


async def test_a_destination_down_for_10_s_reconnects_and_costs_the_others_nothing(
    live: Live, nginx: NginxRtmp, second_nginx: NginxRtmp
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, "rs-" + secrets.token_hex(4), "down")
    steady_key, flaky_key = new_key(), new_key()
    steady = await add_restream(live, job, nginx.rtmp_url("live1"), steady_key)
    flaky = await add_restream(live, job, second_nginx.rtmp_url("live1"), flaky_key)

    seconds = 30
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), seconds))
    await wait_state(live, job, flaky, "forwarding")
    await asyncio.sleep(3)
    second_nginx.stop()
    await wait_state(live, job, flaky, "reconnecting")
    await asyncio.sleep(10)
    second_nginx.start()
    back = await wait_state(live, job, flaky, "forwarding", within=20)
    assert back["reconnects"] >= 1
    done = await publisher
    assert done.returncode == 0, done.stderr
    stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    await wait_state(live, job, steady, "idle")

    # The other restream and the ladder lost nothing.
    assert_every_source_frame(probe(nginx.recording("live1", steady_key)), seconds)
    assert stats["droppedFrames"] == 0 and all(o["droppedFrames"] == 0 for o in stats["outputs"])
    states = [
        status
        for status, message in await restream_timings(live, job)
        if f"restream {flaky['id']} " in message
    ]
    connected = states.index("RestreamConnected")
    assert states[connected + 1] == "RestreamReconnecting", states
    assert "RestreamConnected" in states[connected + 2 :], states
    # After the reconnect the destination has the live again, from a keyframe at 0.
    again = probe(second_nginx.recording("live1", flaky_key))
    assert again["video"] and min(again["video"]) < 3 / FPS


class BlackHole:
    """A destination that accepts the TCP connection and then reads nothing."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.server.setblocking(False)
        while True:
            connection, _ = await loop.sock_accept(self.server)
            self.accepted.append(connection)  # kept open, never read

    def close(self) -> None:
        for connection in self.accepted:
            connection.close()
        self.server.close()


async def test_a_destination_that_reads_nothing_costs_the_live_and_the_others_nothing(
    live: Live, nginx: NginxRtmp
) -> None:
    hole = BlackHole()
    accepting = asyncio.create_task(hole.run())
    try:
        job = await live.create_online_job(SMALL_TEMPLATE, "rs-" + secrets.token_hex(4), "hole")
        good_key = new_key()
        good = await add_restream(live, job, nginx.rtmp_url("live1"), good_key)
        stuck = await add_restream(live, job, f"rtmp://127.0.0.1:{hole.port}/app", new_key())
        seconds = 15
        publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), seconds))
        await wait_state(live, job, good, "forwarding")
        failing = await wait_state(live, job, stuck, "reconnecting", within=30)
        assert "timed out" in failing["lastError"] or "stalled" in failing["lastError"], failing
        pipeline = live.server.app[LIVE_JOBS_KEY]._running.get(job["id"])  # the in-process live
        done = await publisher
        assert done.returncode == 0, done.stderr
        reader = next(r for r in pipeline.source.readers if r.name == f"restream {stuck['id']}")
        assert reader.peak_bytes <= QUEUE_BYTES
        stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
        await wait_state(live, job, good, "idle")
    finally:
        accepting.cancel()
        hole.close()
    assert_every_source_frame(probe(nginx.recording("live1", good_key)), seconds)
    assert stats["droppedFrames"] == 0 and all(o["droppedFrames"] == 0 for o in stats["outputs"])
    assert hole.accepted, "the black hole was never dialled"


async def test_toggle_delete_and_a_refused_key_while_live(
    live: Live, nginx: NginxRtmp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    job = await live.create_online_job(SMALL_TEMPLATE, "rs-" + secrets.token_hex(4), "toggle")
    key, refused_key = new_key(), new_key()
    restream = await add_restream(live, job, nginx.rtmp_url("live1"), key)
    refused = await add_restream(live, job, nginx.rtmp_url("guarded"), refused_key)
    wrong_app = await add_restream(live, job, nginx.rtmp_url("nosuchapp"), new_key())
    # RTMPS to an address its certificate does not name: verified, so refused
    wrong_name = await add_restream(live, job, nginx.rtmps_url("live2", "127.0.0.2"), new_key())
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 20))
    await wait_state(live, job, restream, "forwarding")

    errored = await wait_state(live, job, refused, "errored")
    assert "closed after publish" in errored["lastError"], errored
    errored = await wait_state(live, job, wrong_app, "errored")
    assert "closed after connect" in errored["lastError"], errored
    errored = await wait_state(live, job, wrong_name, "errored")
    assert "TLS certificate error" in errored["lastError"], errored

    status, toggled = await api(live, "PUT", f"/restreams/{restream['id']}/toggle")
    assert status == 200 and toggled["result"] == {"id": restream["id"], "status": False}
    await wait_state(live, job, restream, "idle", within=1.5)
    recording = nginx.recording("live1", key)
    size = recording.stat().st_size
    await asyncio.sleep(1.5)
    assert recording.stat().st_size == size, "still sending after the toggle"

    status, toggled = await api(live, "PUT", f"/restreams/{restream['id']}/toggle")
    assert toggled["result"]["status"] is True
    await wait_state(live, job, restream, "forwarding", within=3)

    status, deleted = await api(live, "DELETE", f"/restreams/{refused['id']}")
    assert status == 200 and deleted["result"] is True
    assert int(refused["id"]) not in await restreams_of(live, job)
    done = await publisher
    assert done.returncode == 0, done.stderr
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})

    assert grep_logs(caplog, key, refused_key) == []
    timings = await restream_timings(live, job)
    assert any(s == "RestreamErrored" and "closed after publish" in m for s, m in timings)
    assert not any(k in str(timings) for k in (key, refused_key))


async def test_a_publisher_blip_is_bridged_by_the_slate_on_one_connection(
    live: Live, nginx: NginxRtmp
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, "rs-" + secrets.token_hex(4), "blip")
    key = new_key()
    restream = await add_restream(live, job, nginx.rtmp_url("live1"), key)
    first = await publish(live.rtmp_url(job["key"]), 6)
    assert first.returncode == 0, first.stderr
    await live.wait_status(job, 4)  # Interrupted: within the reconnect window
    await asyncio.sleep(3)
    second = await publish(live.rtmp_url(job["key"]), 6)
    assert second.returncode == 0, second.stderr
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    final = await wait_state(live, job, restream, "idle")
    assert final["reconnects"] == 0

    # One publish at nginx: one continuous recording, no reconnect on its side.
    publishes = nginx.error_log_text().count("publish: name=")
    assert publishes == 1, nginx.error_log_text()
    recording = nginx.recording("live1", key)
    assert ffmpeg_warnings(recording) == ""
    frames = probe(recording)
    video = sorted(frames["video"])
    # Continuous: at most the source's B-frame delay (2 frames) and one frame lost
    # where its session starts again (its first decode time continues the timeline).
    holes = [(round(a, 3), round(b - a, 3)) for a, b in pairwise(video) if b - a > 1.5 / FPS]
    assert len(holes) <= 2 and all(gap <= 4 / FPS for _, gap in holes), holes
    assert_every_source_frame(frames, 6)
    # The gap (about 3 s and the publisher's reconnect) is slate: one still picture.
    assert video[-1] > 12 + 2.5
    still = decode_between(recording, 7.0, 8.5)
    assert len(still) >= FPS
    changes = [float(np.abs(p.astype(int) - still[0]).mean()) for p in still[1:]]
    assert max(changes) < 1.0, changes  # the source itself moves every frame: see below
    moving = decode_between(recording, 1.0, 2.0)
    assert float(np.abs(moving[-1].astype(int) - moving[0]).mean()) > 5.0


def decode_between(path: Path, start: float, end: float) -> list[np.ndarray]:
    """The luma planes of the recording's frames from `start` to `end` seconds."""
    import av

    planes = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is None or frame.time < start:
                continue
            if frame.time > end:
                break
            planes.append(frame.to_ndarray(format="gray"))
    return planes


@pytest.mark.skipif("libx265" not in __import__("av").codecs_available, reason="no libx265")
async def test_an_hevc_source_is_restreamed_as_its_top_rendition(
    live: Live, nginx: NginxRtmp, caplog: pytest.LogCaptureFixture
) -> None:
    import av

    from tests.support.publishers import pyav_publish_cmd, run_process

    caplog.set_level(logging.INFO)
    job = await live.create_online_job(SMALL_TEMPLATE, "rs-" + secrets.token_hex(4), "hevc")
    key = new_key()
    restream = await add_restream(live, job, nginx.rtmp_url("live1"), key)
    seconds = 8
    cmd = pyav_publish_cmd(live.rtmp_url(job["key"]), "libx265", 320, 180, FPS, seconds, "1:8")
    publisher = asyncio.create_task(run_process(cmd))
    forwarding = await wait_state(live, job, restream, "forwarding")
    assert forwarding["lastError"] is None
    rc, stderr = await publisher
    assert rc == 0, stderr
    stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    await wait_state(live, job, restream, "idle")

    top = stats["outputs"][0]
    assert (top["name"], top["width"], top["height"]) == ("180p", 320, 180)
    recording = nginx.recording("live1", key)
    assert ffmpeg_warnings(recording) == ""
    with av.open(str(recording)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        codecs = (video.codec_context.name, audio.codec_context.name)
        size = (video.codec_context.width, video.codec_context.height)
        pictures = [f.to_ndarray(format="gray") for f in container.decode(video)]
    assert codecs == ("h264", "aac") and size == (320, 180)
    frames = probe(recording)
    duration = max(frames["video"]) - min(frames["video"])
    # The rendition's frames, then (the publisher gone) the slate: its still picture.
    moving = 1 + sum(
        1 for a, b in pairwise(pictures) if float(np.abs(b.astype(int) - a).mean()) > 0.5
    )
    gop = 2 * FPS  # SMALL_TEMPLATE's gopSeconds
    assert abs(moving - top["framesEncoded"]) <= gop, (moving, top["framesEncoded"], duration)
    assert seconds - 1 <= moving / FPS <= seconds + 0.5, moving
    assert seconds - 1 <= duration <= seconds + 3, duration  # the slate's second or two
    assert frames["audio"] and abs(min(frames["audio"]) - min(frames["video"])) < 3 / FPS

    timings = await restream_timings(live, job)
    connected = [m for s, m in timings if s == "RestreamConnected"]
    assert connected and "(rendition 180p: the source is hevc)" in connected[0], timings
    said = [r.getMessage() for r in caplog.records if "forwarding rendition" in r.getMessage()]
    assert len(said) == 1 and "source is hevc: forwarding rendition 180p (H.264)" in said[0]
    assert grep_logs(caplog, key) == []
