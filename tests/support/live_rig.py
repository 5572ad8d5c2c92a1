"""One real live for the players tier, run on an event loop of its own in a thread.

The service (``create_app``, as ``tests.support.service.start_live`` runs it), a job on
the small ladder, and the ffmpeg CLI publishing the small test source in real time:
20 s, a disconnect, 5 s away (the output goes on with the input-loss fill), 8 s more
on the same key within the reconnect window (one timeline, no discontinuity), then the
job is put offline, which ends the live (``EXT-X-ENDLIST``).
The players under test are ordinary blocking programs (ffmpeg, gst-launch, a browser)
driven from synchronous tests; keeping the service on a loop in another thread means
nothing a test does can stall the ingest, exactly as a viewer on another machine could
not. The test side only waits on `threading.Event`s with deadlines (`LiveRig.wait`).

A small aiohttp app on the same loop serves the hls.js test page (`page_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import m3u8
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from api.app import create_app
from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_RENDITIONS, SMALL_SIZE, SMALL_TEMPLATE
from tests.support.ports import free_port
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.service import Live, make_projects, make_settings

FRAME_RATE = 30
FIRST_SECONDS = 20
SECOND_SECONDS = 8
# The publisher is away this long between the two (inside the reconnect window): the
# output goes on with the input-loss fill (the last picture, then the slate).
GAP_SECONDS = 5
SEGMENT_SECONDS = 2.0
RECONNECT_WINDOW_SECONDS = 30.0
RENDITIONS = SMALL_RENDITIONS
# Playable: every rendition's live playlist lists this many segments.
PLAYABLE_SEGMENTS = 2

SERVICE_LOGGERS = ("api", "ingest", "encoder", "packager")

log = logging.getLogger(__name__)


class _ListHandler(logging.Handler):
    """Keeps the service's WARNING and ERROR lines, for the tests' failure messages."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass(frozen=True)
class LiveUrls:
    """Where players find the live, as the API gives it."""

    master: str
    live: dict[str, str]  # rendition -> index.m3u8 (the sliding window)
    event: dict[str, str]  # rendition -> event.m3u8 (the whole live)


@dataclass
class Publisher:
    """What one ffmpeg publisher sent."""

    seconds: int
    frames: int
    returncode: int
    stderr: str


@dataclass(repr=False)
class LiveRig:
    """The service, its job and its publishers; the test side reads it, never drives it."""

    tmp_path: Path
    s3_server: EmbeddedS3
    hls_js: Path
    page_html: str
    urls: LiveUrls | None = None
    page_url: str = ""
    publishers: list[Publisher] = field(default_factory=list)
    job: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    failure: BaseException | None = None
    # Set in order by the live; `failed` is set (and `failure` kept) if the live broke.
    ready: threading.Event = field(default_factory=threading.Event)
    playable: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    service_warnings: list[str] = field(default_factory=list)  # the service's own log
    # Frames the service itself reports dropping (too slow: a loaded machine), once ended.
    ingest_dropped: int = 0
    rendition_dropped: dict[str, int] = field(default_factory=dict)
    # What each rendition encoded in all (the publishers' frames and the fill's), and the
    # fill's frames, as the service says (EncoderStopped; stats before going offline).
    rendition_encoded: dict[str, int] = field(default_factory=dict)
    fill_frames: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._thread_main, name="players-live", daemon=True)

    # -- the test side -----------------------------------------------------------------

    @property
    def frames_sent(self) -> int:
        return sum(p.frames for p in self.publishers)

    def frames_kept(self, rendition: str) -> int:
        """The frames sent less those the service reports dropping for `rendition`."""
        return self.frames_sent - self.ingest_dropped - self.rendition_dropped.get(rendition, 0)

    @property
    def seconds_sent(self) -> int:
        return sum(p.seconds for p in self.publishers)

    @property
    def seconds_live(self) -> float:
        """How long the live lasted on its timeline: what was sent, and the fill."""
        encoded = self.rendition_encoded.get(RENDITIONS[0], 0)
        return encoded / FRAME_RATE if encoded else float(self.seconds_sent)

    def start(self) -> None:
        self._thread.start()
        self.wait(self.ready, 60, "the service and the job are up")

    def wait(self, event: threading.Event, within: float, what: str) -> None:
        """Wait for `event`; fail with what the live did if it broke or the deadline passed."""
        deadline = time.monotonic() + within
        while not event.wait(timeout=0.1):
            if self.failed.is_set():
                raise AssertionError(f"the live broke before {what}: {self.failure!r}\n{self}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within} s: {what}\n{self}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def __repr__(self) -> str:
        return f"LiveRig({self.urls.master if self.urls else 'not started'})"

    def __str__(self) -> str:
        lines = [f"  {t:6.1f} s  {what}" for t, what in self.timeline]
        sent = [f"{p.seconds} s / {p.frames} frames, rc {p.returncode}" for p in self.publishers]
        warned = "\n  ".join(self.service_warnings[-20:])
        return (
            "live timeline:\n" + "\n".join(lines) + f"\npublishers: {sent}"
            f"\nservice warnings ({len(self.service_warnings)}):"
            + (f"\n  {warned}" if warned else "")
        )

    # -- the live side (its own thread and loop) ----------------------------------------

    def _note(self, what: str) -> None:
        self.timeline.append((time.monotonic() - self._t0, what))
        log.info("[players live] %s", what)

    def _thread_main(self) -> None:
        handler = _ListHandler(self.service_warnings)
        for name in SERVICE_LOGGERS:
            logging.getLogger(name).addHandler(handler)
        try:
            asyncio.run(self._main())
        except BaseException as error:  # kept for the tests; a thread must not raise
            self.failure = self.failure or error
            self.failed.set()
        finally:
            for name in SERVICE_LOGGERS:
                logging.getLogger(name).removeHandler(handler)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        settings = make_settings(
            self.tmp_path,
            self.s3_server,
            rtmp_host="127.0.0.1",
            rtmp_port=free_port(),
            reconnect_window_seconds=RECONNECT_WINDOW_SECONDS,
        )
        project = make_projects(settings.db_path, 1)[0]
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        page = web.AppRunner(page_app(self.page_html, self.hls_js))
        await page.setup()
        page_port = free_port()
        await web.TCPSite(page, "127.0.0.1", page_port).start()
        self.page_url = f"http://127.0.0.1:{page_port}/"
        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_server.endpoint,
            aws_access_key_id=self.s3_server.access_key,
            aws_secret_access_key=self.s3_server.secret_key,
            region_name="us-east-1",
        )
        try:
            async with aiohttp.ClientSession() as session:
                live = Live(settings, server, session, project, s3)
                scenario = asyncio.create_task(self._scenario(live, session))
                stop = asyncio.create_task(self._stop.wait())
                await asyncio.wait({scenario, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not scenario.done():
                    scenario.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scenario  # raises what broke the live
                await stop
        finally:
            await page.cleanup()
            await server.close()

    async def _scenario(self, live: Live, session: aiohttp.ClientSession) -> None:
        try:
            await self._run_live(live, session)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.failure = error
            self._note(f"broke: {error!r}")
            self.failed.set()
            raise

    async def _run_live(self, live: Live, session: aiohttp.ClientSession) -> None:
        bucket = "players-" + secrets.token_hex(4)
        self.job = await live.create_online_job(SMALL_TEMPLATE, bucket, "issue8")
        detail = (await live.call("GET", f"/livejobs/{self.job['id']}"))["result"]
        manifests: dict[str, str] = detail["outputManifests"]
        self.urls = LiveUrls(
            master=detail["storageMasterFile"],
            live=dict(manifests),
            event={name: url.rsplit("/", 1)[0] + "/event.m3u8" for name, url in manifests.items()},
        )
        self._note(f"job {self.job['id']} online, master {self.urls.master}")
        self.ready.set()

        url = live.rtmp_url(self.job["key"])
        first = asyncio.create_task(publish(url, FIRST_SECONDS))
        await live.wait_status(self.job, 3)
        self._note("Live (first publisher)")
        await self._wait_playable(session, first)
        self.publishers.append(await first)
        self._note(f"first publisher done, rc {self.publishers[-1].returncode}")
        await live.wait_status(self.job, 4)  # Interrupted: inside the reconnect window
        self._note(f"Interrupted; the second publisher reconnects in {GAP_SECONDS} s")
        await asyncio.sleep(GAP_SECONDS)
        self.publishers.append(await publish(url, SECOND_SECONDS))
        self._note(f"second publisher done, rc {self.publishers[-1].returncode}")
        await live.wait_status(self.job, 4)
        for publisher in self.publishers:
            assert publisher.returncode == 0, publisher.stderr
        # The stats before offline: after it the job has no pipeline to count.
        self.stats = (await live.call("GET", f"/livejobs/{self.job['id']}/stats"))["result"][0]
        self._note("both publishers gone; " + _stats_line(self.stats))
        await live.call("POST", f"/livejobs/{self.job['key']}", json={"online": False})
        self._note("offline: the live ended")
        for timing in await live.timings(self.job):
            if timing["childStatus"] == "EncoderStopped":
                self._count_drops(timing["messageComment"])
        self.ingest_dropped = int(self.stats.get("droppedFrames") or 0)
        self.fill_frames = int(self.stats.get("fillFrames") or 0)
        self.ended.set()

    def _count_drops(self, summary: str) -> None:
        """Add up `EncoderStopped`'s "720p 600 frames, 0 dropped; ..." per rendition."""
        self._note(f"EncoderStopped: {summary}")
        for name, encoded, dropped in re.findall(r"(\w+) (\d+) frames, (\d+) dropped", summary):
            self.rendition_dropped[name] = self.rendition_dropped.get(name, 0) + int(dropped)
            self.rendition_encoded[name] = self.rendition_encoded.get(name, 0) + int(encoded)

    async def _wait_playable(
        self, session: aiohttp.ClientSession, publisher: asyncio.Task[Publisher]
    ) -> None:
        """Until the master exists and every live playlist lists a few segments."""
        assert self.urls is not None
        urls = [self.urls.master, *self.urls.live.values()]
        while not publisher.done():
            counts = [await _segments_listed(session, u) for u in urls]
            if counts[0] >= 0 and min(counts[1:]) >= PLAYABLE_SEGMENTS:
                self._note(f"playable: live playlists list {counts[1:]} segments")
                self.playable.set()
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the first publisher ended before the live was playable")


def _stats_line(stats: dict[str, Any]) -> str:
    """The job's frame counts: dropped at ingest, encoded and dropped per rendition."""
    outputs = ", ".join(
        f"{o.get('name')} {o.get('framesEncoded')} encoded/{o.get('droppedFrames')} dropped"
        for o in stats.get("outputs", [])
    )
    return f"ingest droppedFrames {stats.get('droppedFrames')}; {outputs}"


async def _segments_listed(session: aiohttp.ClientSession, url: str) -> int:
    """How many segments the playlist at `url` lists (0 for a master), -1 if absent."""
    async with session.get(url) as response:
        if response.status != 200:
            return -1
        return len(m3u8.loads(await response.text()).segments)


async def publish(url: str, seconds: int) -> Publisher:
    """The ffmpeg CLI publishing `seconds` of the small test source in real time."""
    command = ffmpeg_publish_cmd(
        url,
        size=SMALL_SIZE,
        rate=FRAME_RATE,
        seconds=seconds,
        realtime=True,
        gop_frames=2 * FRAME_RATE,
        extra=("-pix_fmt", "yuv420p", "-b:a", "128k"),
    )
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout=seconds * 3 + 30)
    finally:
        if process.returncode is None:  # timed out or cancelled: never leave it running
            process.kill()
            await process.wait()
    return Publisher(seconds, seconds * FRAME_RATE, process.returncode or 0, err.decode())


def page_app(html: str, hls_js: Path, script: str = "hls.js") -> web.Application:
    """A test page and its player's dist file (hls.js's, or another's at `/{script}`),
    from an origin of their own."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    async def player(request: web.Request) -> web.FileResponse:
        return web.FileResponse(hls_js, headers={"Content-Type": "application/javascript"})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get(f"/{script}", player)
    return app


def player_page(html: Path, dist: Path, script: str = "hls.js") -> web.Application:
    """`page_app` of a test page file; a missing player dist file fails the test with
    what to run."""
    if not dist.exists():
        pytest.fail(f"{dist} is missing: `make test-deps` runs `npm ci` for {script}")
    return page_app(html.read_text(), dist, script)


@contextlib.asynccontextmanager
async def serve_page(app: web.Application) -> AsyncIterator[str]:
    """A page's app on a free port of this loop (its URL), for a test's whole run."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()
