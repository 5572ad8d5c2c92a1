"""Issue 8, "HLS that every player accepts": real players read one real live.

One live for the whole module (`live`, module-scoped): the service with a job on the
small ladder (180p/144p, 2 s segments: what the players read does not depend on the
picture size, and the tier then leaves CPU to a parallel run), the ffmpeg CLI
publishing 20 s of the small 320x180 30 fps test source in real time, 5 s without a
publisher (the input-loss fill: the last picture, then the slate, with silence), a
reconnect on the same key within the window for 8 s more (one timeline: no
discontinuity), then the job put offline, which ends the live (`EXT-X-ENDLIST`).
The live runs on its own event loop in a thread (`tests/support/live_rig.py`) and
goes on by itself while the tests run; each test waits on the live's events
(`playable`, `ended`) with a deadline, never a blind sleep. Under pytest-xdist the
whole module runs on one worker (`xdist_group`).

Order matters, and is the order of this file:

- First the two checks that need the live running, while the first publisher is
  still on: GStreamer `playbin` plays 10 s (it starts ~5 s into the live and, being
  three segments behind the edge, plays the first publisher's media), then hls.js in
  Chromium plays 15 s and switches levels down and up, through the publisher's
  absence and its return (no error, no stall).
- Then the checks of the ended live, which wait for `ended`: ffmpeg reads each
  variant of the master strictly, ffprobe's duration of the master, hls.js plays the
  ended master from start to end, the TS continuity counters of every rendition's
  whole recording, and the SPS frame rate.

A live-side test that finds the live already ended fails and says so (an earlier
test took too long) rather than testing nothing.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest
import requests
from playwright.sync_api import Browser, sync_playwright

from packager.s3server import EmbeddedS3
from tests.support.live_rig import FRAME_RATE, GAP_SECONDS, RENDITIONS, SEGMENT_SECONDS, LiveRig
from tests.support.mpegts import Segment, check_continuity
from tests.support.players import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    HlsJsPlayer,
    ffmpeg_read_variant,
    ffprobe_duration,
    gst_play,
    sps_timing,
)

# One live for the whole module: under pytest-xdist every test of it runs on one worker.
pytestmark = [
    pytest.mark.players,
    pytest.mark.slow,
    pytest.mark.xdist_group("players"),
    pytest.mark.timeout(180),
]

REPO = Path(__file__).resolve().parents[2]
HLS_JS = REPO / "node_modules" / "hls.js" / "dist" / "hls.min.js"
PAGE = Path(__file__).with_name("hlsjs_page.html")
LIVE_DEADLINE_SECONDS = 90  # from any test's start to the live's end, at most
GST_LIVE_SECONDS = 10
HLSJS_LIVE_SECONDS = 15
ENDED_PLAYBACK_RATE = 4  # the ended live played from start to end, 4x faster than real time


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, s3_server: EmbeddedS3) -> Iterator[LiveRig]:
    rig = LiveRig(tmp_path_factory.mktemp("players"), s3_server, HLS_JS, PAGE.read_text())
    rig.start()
    yield rig
    rig.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, driven by Playwright (never `playwright install`)."""
    if not HLS_JS.exists():
        pytest.fail(f"{HLS_JS} is missing: `make test-deps` runs `npm ci` for hls.js")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test-deps` installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=60_000
        )
        yield chromium
        chromium.close()


def ended(live: LiveRig) -> None:
    live.wait(live.ended, LIVE_DEADLINE_SECONDS, "the live ended")


# -- the live, while it runs -------------------------------------------------------------


def test_gstreamer_plays_the_live_without_discontinuity_at_the_real_frame_rate(
    live: LiveRig,
) -> None:
    live.wait(live.playable, 60, "the live is playable")
    assert not live.ended.is_set(), f"the live ended before GStreamer could play it\n{live}"
    assert live.urls is not None
    run = gst_play(live.urls.master, GST_LIVE_SECONDS, within=GST_LIVE_SECONDS + 20)
    report = f"{run.report()}\n{live}"
    print(report)
    played, warned, rates = run.played_seconds, len(run.discontinuity_warnings), run.frame_rates
    assert played >= GST_LIVE_SECONDS, report
    assert warned == 0, report
    assert rates == {f"{FRAME_RATE}/1"}, report


def test_hlsjs_plays_the_live_and_switches_levels_without_an_error(
    live: LiveRig, browser: Browser
) -> None:
    live.wait(live.playable, 60, "the live is playable")
    assert not live.ended.is_set(), f"the live ended before hls.js could play it\n{live}"
    assert live.urls is not None
    player = HlsJsPlayer.open(browser, live.page_url, live.urls.master)
    try:
        player.wait("player.levels.length > 0 && video.currentTime > 0", 30, "playback starts")
        started_at = player.state()["currentTime"]
        window_ends = time.monotonic() + HLSJS_LIVE_SECONDS
        heights = [level["height"] for level in player.state()["levels"]]
        assert sorted(heights) == sorted(int(r.removesuffix("p")) for r in RENDITIONS), (
            player.report()
        )
        player.switch_to(heights.index(min(heights)), min(heights))  # down
        player.switch_to(heights.index(max(heights)), max(heights))  # and up
        samples = []
        while (now := time.monotonic()) < window_ends:  # watch it play for the whole window
            samples.append(round(player.state()["currentTime"], 2))
            player.page.wait_for_timeout(min(500, max(1, (window_ends - now) * 1000)))
        state = player.state()
        report = f"{player.report()}\ncurrentTime samples {samples}\n{live}"
        print(report)
        errors, advanced = len(state["errors"]), state["currentTime"] - started_at
        assert errors == 0, report
        assert advanced >= HLSJS_LIVE_SECONDS * 0.6, report
    finally:
        player.close()


# -- the ended live ----------------------------------------------------------------------


def test_ended_master_lasts_the_whole_live(live: LiveRig) -> None:
    ended(live)
    assert live.urls is not None
    master = requests.get(live.urls.master, timeout=10).text
    duration, seconds = ffprobe_duration(live.urls.master), live.seconds_live
    assert abs(duration - seconds) <= SEGMENT_SECONDS, (
        f"ffprobe: the ended master lasts {duration:.3f} s, the live {seconds} s"
        f" (within one segment)\nmaster.m3u8:\n{master}\n{live}"
    )


@pytest.mark.parametrize("rendition", RENDITIONS)
def test_ffmpeg_reads_each_variant_of_the_ended_master_strictly(
    live: LiveRig, rendition: str
) -> None:
    ended(live)
    assert live.urls is not None
    master = m3u8.loads(requests.get(live.urls.master, timeout=10).text)
    programs = [i for i, p in enumerate(master.playlists) if p.uri.startswith(f"{rendition}/")]
    assert len(programs) == 1, f"{rendition} is not one variant of the master:\n{master.dumps()}"
    read = ffmpeg_read_variant(live.urls.master, programs[0])
    print(" ".join(read.command), *read.stderr_lines, sep="\n")
    problems = []
    if read.returncode != 0:
        problems.append(f"ffmpeg exited {read.returncode}")
    if read.stderr_lines:
        shown = "\n    ".join(read.stderr_lines[:40])
        problems.append(f"ffmpeg -v warning printed {len(read.stderr_lines)} lines:\n    {shown}")
    # Every frame the rendition encoded: every frame sent, less any the service itself
    # reports dropping for being too slow (a capacity event on a loaded machine, counted
    # and logged, not a packaging fault), and the fill while the publisher was away.
    dropped = live.frames_sent - live.frames_kept(rendition)
    encoded = live.rendition_encoded.get(rendition, 0)
    if read.video_frames != encoded:
        problems.append(
            f"decoded {read.video_frames} video frames ({read.audio_frames} audio),"
            f" the rendition encoded {encoded}"
        )
    if encoded < live.frames_kept(rendition) + live.fill_frames:
        problems.append(
            f"encoded {encoded} frames: the publishers sent {live.frames_sent}, the service"
            f" reports dropping {dropped} and filling {live.fill_frames}"
        )
    if live.fill_frames < (GAP_SECONDS - 1) * FRAME_RATE:
        problems.append(f"{live.fill_frames} fill frames for a {GAP_SECONDS} s gap")
    elif dropped:
        print(f"note: the service dropped {dropped} {rendition} frames (too slow), all others read")
    event = requests.get(live.urls.event[rendition], timeout=10).text
    assert not problems, "\n".join(
        [
            " ".join(read.command),
            *problems,
            master.dumps(),
            f"{rendition}/event.m3u8:",
            event,
            str(live),
        ]
    )


def test_hlsjs_plays_the_ended_live_from_start_to_end(live: LiveRig, browser: Browser) -> None:
    ended(live)
    assert live.urls is not None
    player = HlsJsPlayer.open(browser, live.page_url, live.urls.master, ENDED_PLAYBACK_RATE)
    try:
        player.wait("player.levels.length > 0 && video.currentTime > 0", 30, "playback starts")
        player.wait(
            "player.ended || (video.duration > 0 && video.currentTime >= video.duration - 0.5)",
            live.seconds_live / ENDED_PLAYBACK_RATE + 30,
            "it plays to the end",
        )
        state = player.state()
        report = f"{player.report()}\n{live}"
        print(report)
        duration, seconds, errors = state["duration"], live.seconds_live, len(state["errors"])
        assert state["firstPlayingAt"] <= SEGMENT_SECONDS, report  # from the start
        assert abs(duration - seconds) <= SEGMENT_SECONDS, report
        assert errors == 0, report
    finally:
        player.close()


@dataclass(frozen=True, repr=False)
class Recording:
    """One rendition's ended event playlist and every segment it lists, in order."""

    playlist: str
    segments: list[Segment]


@pytest.fixture(scope="module")
def recordings(live: LiveRig) -> dict[str, Recording]:
    ended(live)
    assert live.urls is not None
    out = {}
    for rendition, url in live.urls.event.items():
        text = requests.get(url, timeout=10).text
        playlist = m3u8.loads(text, uri=url)
        segments = []
        for segment in playlist.segments:
            response = requests.get(segment.absolute_uri, timeout=10)
            response.raise_for_status()
            segments.append(Segment(segment.uri, response.content, bool(segment.discontinuity)))
        out[rendition] = Recording(text, segments)
    return out


@pytest.mark.parametrize("rendition", RENDITIONS)
def test_ts_continuity_runs_across_segments_and_the_publishers_absence(
    recordings: dict[str, Recording], rendition: str
) -> None:
    recording = recordings[rendition]
    assert m3u8.loads(recording.playlist).is_endlist, recording.playlist
    report = check_continuity(recording.segments)
    message = f"{rendition} event.m3u8, {len(recording.segments)} segments:\n{report.summary()}"
    print(message)
    ok, seams, flagged = report.ok, report.playlist_discontinuities, report.indicator_segments
    assert ok, message
    # The reconnect inside the window is no discontinuity: the fill kept the timeline.
    assert seams == [] and flagged == [], message


def looks_like_the_slate(frame: av.VideoFrame) -> bool:
    """The default slate: a dark, colourless frame (a line of text on it)."""
    planes = frame.to_ndarray(format="yuv420p")
    luma, chroma = planes[: frame.height], planes[frame.height :]
    return float(np.median(luma)) < 48 and float(np.abs(chroma.astype(int) - 128).mean()) < 4


def test_the_publishers_absence_is_recorded_as_the_slate(
    recordings: dict[str, Recording], tmp_path: Path
) -> None:
    """The 5 s without a publisher: the last picture for 1 s, then the slate, in the
    recording as in the live playlists (ONAIR_INPUT_LOSS_REPEAT_MS, default 1 s)."""
    rendition = RENDITIONS[0]
    path = tmp_path / f"{rendition}.ts"
    path.write_bytes(b"".join(segment.data for segment in recordings[rendition].segments))
    with av.open(str(path)) as container:
        shown = [looks_like_the_slate(frame) for frame in container.decode(video=0)]
    first = shown.index(True)
    slate = shown[first:].index(False)  # until the publisher is back
    # The gap and the second publisher's start-up, less the repeated last picture.
    assert (GAP_SECONDS - 2) * FRAME_RATE <= slate <= (GAP_SECONDS + 1) * FRAME_RATE, (first, slate)
    # The second publisher's 8 s follow (then, perhaps, the fill before going offline).
    back = first + slate
    assert not any(shown[back : back + 7 * FRAME_RATE]), "the publisher's pictures again"
    assert first >= 15 * FRAME_RATE  # after the first publisher's 20 s


@pytest.mark.parametrize("rendition", RENDITIONS)
def test_sps_declares_the_real_frame_rate(
    recordings: dict[str, Recording], rendition: str, tmp_path: Path
) -> None:
    first = recordings[rendition].segments[0]
    path = tmp_path / f"{rendition}-{first.name}"
    path.write_bytes(first.data)
    timing = sps_timing(path)
    rate = timing.frame_rate
    assert rate == FRAME_RATE, (
        f"{rendition} {first.name}: time_scale / (2 * num_units_in_tick) = {rate}"
        ", trace_headers:\n  " + "\n  ".join(timing.trace)
    )


@pytest.mark.parametrize("rendition", RENDITIONS)
def test_the_first_segment_starts_its_picture_and_sound_together(
    recordings: dict[str, Recording], rendition: str
) -> None:
    """hls.js starts a run at the earliest of its audio PTS and video decode time and
    buffers from where both have begun: any lead of one over the other is a hole it
    reports (`bufferSeekOverHole`) when it stalls there."""
    first = recordings[rendition].segments[0]
    starts: dict[str, tuple[int, int]] = {}  # (pts, dts) of each stream's first packet
    with av.open(io.BytesIO(first.data), format="mpegts") as container:
        for packet in container.demux():
            kind = packet.stream.type
            if packet.size and packet.pts is not None and kind not in starts:
                starts[kind] = (packet.pts, packet.dts)
    (audio_pts, _), (video_pts, video_dts) = starts["audio"], starts["video"]
    time_zero = min(audio_pts, video_dts)
    buffered_from = max(audio_pts, video_pts)
    hole_ms = (buffered_from - time_zero) / 90
    assert hole_ms <= 1, f"{rendition} {first.name}: {starts} (90 kHz): a {hole_ms:.1f} ms hole"
