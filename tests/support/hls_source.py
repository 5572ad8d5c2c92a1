"""A live HLS source for pull tests: one-second MPEG-TS segments made by the ffmpeg
CLI, served by a local HTTP server as a sliding live window (appended in real time,
EXT-X-ENDLIST at the end), a VOD, a master of three variants, with 404s and oversized
segments on demand; and what ffprobe/ffmpeg say of what was pulled."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import m3u8
from aiohttp import web

from tests.support.media import ffmpeg_warnings
from tests.support.ports import free_port

SEGMENT_COUNT = 8


def make_segments(out: Path, count: int = SEGMENT_COUNT) -> list[bytes]:
    """`count` one-second MPEG-TS segments: 320x180@30 H.264 (a keyframe a second) + AAC."""
    encode = "-v error -f lavfi -i testsrc2=size=320x180:rate=30 -f lavfi -i sine"
    encode += f" -t {count} -c:v libx264 -g 30 -preset ultrafast -c:a aac"
    encode += " -f hls -hls_time 1 -hls_list_size 0"
    subprocess.run(
        [
            "ffmpeg",
            *encode.split(),
            "-hls_segment_filename",
            str(out / "seg%d.ts"),
            str(out / "index.m3u8"),
        ],
        check=True,
        timeout=60,
    )
    listed = m3u8.load(str(out / "index.m3u8"))
    assert len(listed.segments) == count
    return [(out / s.uri).read_bytes() for s in listed.segments]


def frames(path: Path) -> dict[str, int]:
    """Frames ffprobe decodes in `path`, per stream type."""
    probe = subprocess.run(
        [
            "ffprobe",
            *"-v error -count_frames -of json -show_entries".split(),
            "stream=codec_type,nb_read_frames",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    streams = json.loads(probe.stdout)["streams"]
    return {s["codec_type"]: int(s["nb_read_frames"]) for s in streams}


# The source: a local HTTP server


@dataclass
class Source:
    """What the server serves, and what it was asked."""

    segments: list[bytes]
    port: int = 0
    published: int = 0  # live: segments out so far
    ended: bool = False  # live: EXT-X-ENDLIST after the last published one
    window: int = 6  # live: segments listed
    playlist_down: bool = False  # the live playlist answers 404
    missing: set[int] = field(default_factory=set)
    oversized: dict[int, int] = field(default_factory=dict)  # segment: bytes served
    hits: Counter[str] = field(default_factory=Counter)

    def live_playlist(self) -> str:
        first = max(0, self.published - self.window)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1"]
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
        for n in range(first, self.published):
            lines += ["#EXTINF:1.000000,", f"seg{n}.ts"]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def vod_playlist(self) -> str:
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", "#EXT-X-PLAYLIST-TYPE:VOD"]
        for n in range(len(self.segments)):
            lines += ["#EXTINF:1.000000,", f"seg{n}.ts"]
        return "\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n"

    def master_playlist(self) -> str:
        lines = ["#EXTM3U"]
        for name, bandwidth in (("mid", 800_000), ("high", 2_000_000), ("low", 300_000)):
            lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth}", f"{name}/index.m3u8"]
        return "\n".join(lines) + "\n"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        kind, _, name = request.path.strip("/").partition("/")
        mpegurl = "application/vnd.apple.mpegurl"
        if request.path == "/master.m3u8":
            return web.Response(text=self.master_playlist(), content_type=mpegurl)
        if request.path == "/redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/vod/index.m3u8")
        if name == "index.m3u8" and kind == "live" and not self.playlist_down:
            return web.Response(text=self.live_playlist(), content_type=mpegurl)
        if name == "index.m3u8" and kind in ("vod", "low", "mid", "high"):
            return web.Response(text=self.vod_playlist(), content_type=mpegurl)
        if name.startswith("seg") and name.endswith(".ts"):
            n = int(name[3:-3])
            listed = n < self.published if kind == "live" else n < len(self.segments)
            if listed and n not in self.missing:
                body = self.segments[n]
                if n in self.oversized:
                    null_packet = b"\x47\x1f\xff\x10" + b"\xff" * 184
                    body += null_packet * (self.oversized[n] // 188)
                return web.Response(body=body, content_type="video/mp2t")
        raise web.HTTPNotFound()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def publish_live(self, interval_seconds: float = 1.0) -> None:
        """One segment a second, as a live encoder would; EXT-X-ENDLIST after the last."""
        while self.published < len(self.segments):
            await asyncio.sleep(interval_seconds)
            self.published += 1
        self.ended = True


@asynccontextmanager
async def serve_source(segments: list[bytes]) -> AsyncIterator[Source]:
    """The source on a free port of 127.0.0.1 and 127.0.0.2."""
    box = Source(segments)
    app = web.Application()
    app.router.add_get("/{tail:.*}", box.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    box.port = free_port()
    for host in ("127.0.0.1", "127.0.0.2"):
        await web.TCPSite(runner, host, box.port).start()
    try:
        yield box
    finally:
        await runner.cleanup()


def warnings_reading(path: Path) -> str:
    return ffmpeg_warnings(path)
