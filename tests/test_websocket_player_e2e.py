"""The low-latency player: mpegts.js in Debian's Chromium on a job's
webSocketConnection, measured from pixels. A PyAV publisher paints its send time into
every picture (`tests/support/clock_publisher.py`); the page reads it back from the
video element and compares it with its clock (the same host's). Glass to glass, on
loopback: the source's packets (`rendition=source`) within 1 s; a ladder rendition's
figure is printed too (x264's lookahead holds it back)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live_rig import player_page, serve_page
from tests.support.media import SMALL_TEMPLATE
from tests.support.players import watch_websocket
from tests.support.service import Live, start_live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
MPEGTS_JS = REPO / "node_modules" / "mpegts.js" / "dist" / "mpegts.js"
PAGE = REPO / "tests" / "players" / "mpegts_page.html"
PUBLISHER = REPO / "tests" / "support" / "clock_publisher.py"
WATCH_SECONDS = 8
SOURCE_LATENCY_SECONDS = 1.0


@pytest.fixture
async def live(tmp_path: Path, s3_server: Any, s3_client: Any) -> AsyncIterator[Live]:
    async for running in start_live(tmp_path, s3_server, s3_client):
        yield running


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    async with serve_page(player_page(PAGE, MPEGTS_JS, "mpegts.js")) as url:
        yield url


async def test_mpegts_js_plays_the_source_within_a_second_glass_to_glass(
    live: Live, page_url: str
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, f"latency-{int(time.time())}", "clock")
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, str(PUBLISHER), live.rtmp_url(job["key"]), "40",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await live.wait_status(job, 3)
        base = str(live.server.make_url(f"/websocketplay/{job['name']}")).replace("http", "ws", 1)
        source, ladder = await asyncio.to_thread(
            watch_websocket, page_url, [f"{base}?rendition=source", base], WATCH_SECONDS
        )
    finally:
        publisher.kill()
        await publisher.wait()
    figures = {}
    for name, state in (("source", source), ("180p", ladder)):
        assert state["errors"] == [], (name, state["errors"], state["log"])
        assert state["advanced"] >= WATCH_SECONDS * 0.7, (name, state)
        assert len(state["latencies"]) >= 20, (name, state)
        figures[name] = statistics.median(state["latencies"]) / 1000
    print(
        f"glass-to-glass on loopback: source {figures['source']:.3f} s,"
        f" 180p {figures['180p']:.3f} s (median of {len(source['latencies'])} samples)"
    )
    assert figures["source"] <= SOURCE_LATENCY_SECONDS, figures
