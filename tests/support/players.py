"""The players the tier runs, each under a hard timeout, and what they said.

Every helper returns what the player printed that matters, so an assertion can quote
it: a failing test says what the player complained about.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from playwright.sync_api import Browser, Page, sync_playwright

FFMPEG_TIMEOUT_SECONDS = 120
GST_KILL_AFTER_SECONDS = 5


@dataclass
class FfmpegRead:
    """ffmpeg decoding one variant of a playlist to nothing, at `-v warning`."""

    command: list[str]
    returncode: int
    video_frames: int
    audio_frames: int
    stderr_lines: list[str]


def ffmpeg_read_variant(url: str, program: int) -> FfmpegRead:
    """Decode variant `program` of `url` (video and its audio); count the decoded frames.

    `-f framemd5` writes one line per decoded frame, named by output stream (0 the
    video, 1 the audio), so counting is exact; `-v warning` leaves stderr empty
    unless ffmpeg complains (`Packet corrupt`, `non-monotonic DTS`, ...).
    """
    command = [
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "warning", "-i", url,
        "-map", f"0:p:{program}:v:0", "-map", f"0:p:{program}:a:0?", "-f", "framemd5", "-",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_SECONDS)
    streams = [line.split(",", 1)[0] for line in done.stdout.splitlines() if line[:1].isdigit()]
    return FfmpegRead(
        command,
        done.returncode,
        streams.count("0"),
        streams.count("1"),
        [line for line in done.stderr.splitlines() if line.strip()],
    )


def ffprobe_duration(url: str) -> float:
    """The duration ffprobe gives a playlist (the sum of its segments once it has ended)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url],
        capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=True,
    )  # fmt: skip
    return float(done.stdout.strip())


@dataclass(frozen=True)
class SpsTiming:
    num_units_in_tick: int
    time_scale: int
    trace: list[str]  # the VUI timing lines as trace_headers printed them

    @property
    def frame_rate(self) -> float:
        return self.time_scale / (2 * self.num_units_in_tick)


def sps_timing(segment: Path) -> SpsTiming:
    """The VUI timing of the first SPS in `segment`, read by `-bsf:v trace_headers`."""
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info", "-i", str(segment),
         "-map", "0:v:0", "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=True,
    )  # fmt: skip
    fields: dict[str, int] = {}
    trace = []
    for line in done.stderr.splitlines():
        match = re.search(
            r"\b(num_units_in_tick|time_scale|fixed_frame_rate_flag)\b.*= (\d+)$", line
        )
        if match and match.group(1) not in fields:
            fields[match.group(1)] = int(match.group(2))
            trace.append(line.split("] ", 1)[-1])
    assert {"num_units_in_tick", "time_scale"} <= set(fields), (
        "trace_headers printed no SPS VUI timing:\n" + done.stderr[-3000:]
    )
    return SpsTiming(fields["num_units_in_tick"], fields["time_scale"], trace)


# -- hls.js in Chromium -----------------------------------------------------------------


@dataclass
class HlsJsPlayer:
    """The hls.js test page in one browser tab; `report()` is what it saw and logged."""

    page: Page
    console: list[str]

    @classmethod
    def open(cls, browser: Browser, page_url: str, src: str, rate: float = 1) -> HlsJsPlayer:
        page = browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.goto(f"{page_url}?src={quote(src, safe='')}&rate={rate}", timeout=15_000)
        return cls(page, console)

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(
            """() => ({...window.player, currentTime: video.currentTime,
                       duration: video.duration, paused: video.paused,
                       currentLevel: hls.currentLevel, videoHeight: video.videoHeight})"""
        )

    def wait(self, condition: str, within: float, what: str) -> None:
        try:
            self.page.wait_for_function(condition, timeout=within * 1000, polling=100)
        except Exception as error:  # playwright's TimeoutError: say what the page saw
            raise AssertionError(
                f"hls.js: not within {within} s: {what}\n{self.report()}"
            ) from error

    def switch_to(self, level: int, height: int) -> None:
        """Switch to `level` at the next fragment, as ABR does (`nextLevel`: setting
        `currentLevel` instead makes hls.js abort its own fragment load, which it
        reports as a network error): LEVEL_SWITCHED, then that level's frames."""
        seen = len(self.state()["switched"])
        self.page.evaluate(f"hls.nextLevel = {level}")
        self.wait(
            f"player.switched.slice({seen}).includes({level}) && video.videoHeight === {height}",
            20,
            f"LEVEL_SWITCHED to level {level} and {height}-line frames on screen",
        )

    def report(self) -> str:
        """Every hls.js error, the page's state and log, and the browser console."""
        try:
            state = self.state()
        except Exception as error:  # the page itself broke: say so, keep the console
            state = {"log": [], "errors": [], "page": repr(error)}
        log, errors = state.pop("log"), state.pop("errors")
        return "\n  ".join(
            [
                f"hls.js errors ({len(errors)}):",
                *[f"  {json.dumps(e)}" for e in errors[:20]],
                f"state: {json.dumps(state)}",
                "player log:",
                *[f"  {line}" for line in log[-40:]],
                "console:",
                *[f"  {line}" for line in self.console[-40:]],
            ]
        )

    def close(self) -> None:
        self.page.close()


# -- GStreamer --------------------------------------------------------------------------

_PTS = re.compile(r"fakesink0: last-message = chain .*?pts: (\d+):(\d+):([\d.]+)")
# Warnings GStreamer prints on every run here, about nothing the stream does.
_NOISE = re.compile(r"No value transform to serialize|can't find exact taps")
_FRAMERATE = re.compile(r"caps = video/x-(?:h264|raw)[^\n]*?framerate=\(fraction\)(\d+/\d+)")


@dataclass(repr=False)
class GstRun:
    """gst-launch playbin with fakesinks, stopped once the video sink played `seconds`."""

    command: list[str]
    returncode: int | None
    video_buffers: int = 0
    played_seconds: float = 0.0
    discont_buffers: int = 0  # video buffers flagged DISCONT (the first one always is)
    frame_rates: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)  # GST_DEBUG WARNING/ERROR lines
    messages: list[str] = field(default_factory=list)  # gst-launch's own errors/warnings

    @property
    def discontinuity_warnings(self) -> list[str]:
        return [w for w in self.warnings if re.search(r"discont|continuity", w, re.IGNORECASE)]

    def report(self) -> str:
        """What the run did and every warning that is not GStreamer's own debug noise."""
        others = [
            w
            for w in self.warnings
            if w not in self.discontinuity_warnings and not _NOISE.search(w)
        ]
        return "\n  ".join(
            [
                " ".join(self.command),
                f"exit {self.returncode}; {self.video_buffers} video buffers over"
                f" {self.played_seconds:.2f} s of pts, {self.discont_buffers} flagged DISCONT",
                f"video caps framerate: {sorted(self.frame_rates)}",
                f"gst-launch said: {self.messages[-10:]}",
                f"discontinuity warnings ({len(self.discontinuity_warnings)}):",
                *[f"  {w}" for w in self.discontinuity_warnings[:30]],
                f"other warnings ({len(others)}):",
                *[f"  {w}" for w in others[:20]],
            ]
        )


def gst_play(uri: str, seconds: float, within: float) -> GstRun:
    """Play `uri` in playbin until the video sink rendered `seconds` of media.

    `-v` prints the negotiated caps and, with `fakesink silent=false`, every video
    buffer's pts; GST_DEBUG=*:2 sends every WARNING and ERROR to stderr. The whole
    run is under `timeout -k`: 1.22's playbin can wait for EOS forever on a live.
    """
    command = [
        "timeout", "-k", str(GST_KILL_AFTER_SECONDS), str(int(within)),
        "gst-launch-1.0", "-m", "-v", "playbin", f"uri={uri}",
        "video-sink=fakesink silent=false sync=true", "audio-sink=fakesink sync=true",
    ]  # fmt: skip
    env = {**os.environ, "GST_DEBUG": "*:2", "GST_DEBUG_NO_COLOR": "1"}
    run = GstRun(command, None)
    first_pts: float | None = None
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
            errors="replace", start_new_session=True,
        )  # fmt: skip
        assert process.stdout is not None
        deadline = time.monotonic() + within + GST_KILL_AFTER_SECONDS + 5
        try:
            for line in process.stdout:  # ends when gst-launch ends; `timeout` bounds that
                if match := _PTS.search(line):
                    hours, minutes, secs = match.groups()
                    pts = int(hours) * 3600 + int(minutes) * 60 + float(secs)
                    first_pts = pts if first_pts is None else first_pts
                    run.video_buffers += 1
                    run.played_seconds = max(run.played_seconds, pts - first_pts)
                    run.discont_buffers += " discont " in line
                    if run.played_seconds >= seconds:
                        process.send_signal(signal.SIGTERM)  # `timeout` passes it on
                        break
                elif match := _FRAMERATE.search(line):
                    run.frame_rates.add(match.group(1))
                elif line.startswith(("ERROR", "WARNING", "Got EOS", "Execution ended")):
                    run.messages.append(line.rstrip())
                if time.monotonic() > deadline:
                    break
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                run.returncode = process.wait(timeout=GST_KILL_AFTER_SECONDS + 5)
            except subprocess.TimeoutExpired:  # its own group: `timeout` and gst-launch
                os.killpg(process.pid, signal.SIGKILL)
                run.returncode = process.wait(timeout=5)
            process.stdout.close()
        stderr.seek(0)
        run.warnings = [
            line.rstrip() for line in stderr if re.search(r"\b(WARN|ERROR)\b", line[:60])
        ]
    return run


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


# -- mpegts.js on a WebSocket ----------------------------------------------------------


def watch_websocket(page_url: str, socket_urls: list[str], seconds: float) -> list[dict[str, Any]]:
    """mpegts.js (`tests/players/mpegts_page.html` at `page_url`) playing each WebSocket
    URL for `seconds` in Debian's Chromium: the page's state (`errors`, `latencies` in
    ms read from the clock publisher's pictures, `advanced`: media seconds played)."""
    states = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=60_000
        )
        try:
            for url in socket_urls:
                page = browser.new_page()
                try:
                    page.goto(f"{page_url}?src={url}")
                    page.wait_for_function("state.playing && video.currentTime > 0", timeout=20_000)
                    started = page.evaluate("video.currentTime")
                    page.wait_for_timeout(seconds * 1000)
                    state = page.evaluate("state")
                    state["advanced"] = page.evaluate("video.currentTime") - started
                    states.append(state)
                finally:
                    page.close()
        finally:
            browser.close()
    return states
