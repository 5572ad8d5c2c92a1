"""The operator's web console in Chromium, as an operator uses it: a wrong key is
refused in the page, the right one signs in, a job is created from a template and put
online, ffmpeg publishes to the stream key the page shows, the list says Live, the
hls.js preview plays, the charts draw what the telemetry socket sends, a restream is
added and toggled, and a video is cut on the preview's timeline and turns Ready; with
the socket refused, the page says so and its charts poll /stats."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from api.console import NODE_MODULES, VENDOR_FILES
from packager.s3server import EmbeddedS3
from tests.support.console import start_console_live
from tests.support.media import SMALL_SIZE, SMALL_TEMPLATE
from tests.support.players import CHROMIUM, CHROMIUM_FLAGS
from tests.support.ports import free_port
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.service import Live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]
LIVE_SECONDS = 60  # the publisher's length: longer than the test needs, stopped at its end


@pytest.fixture
async def live(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    missing = [str(p) for p in VENDOR_FILES.values() if not (NODE_MODULES / p).is_file()]
    if missing:
        pytest.fail(f"node_modules lacks {missing}: `make test-deps` runs `npm ci`")
    async for running in start_console_live(tmp_path, s3_server, s3_client):
        yield running


def wait_js(page: Page, condition: str, seconds: float, what: str) -> None:
    """Poll `condition` (a JS expression) with a deadline. Not `wait_for_function`: it
    evaluates a string in the page, which the console's CSP (no 'unsafe-eval') refuses."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(f"() => Boolean({condition})"):
        if time.monotonic() > deadline:
            said = page.evaluate(
                "() => [...document.querySelectorAll('#flash, .error, [role=status]')]"
                ".map((e) => e.id + ': ' + e.textContent).filter((t) => !t.endsWith(': '))"
            )
            raise AssertionError(f"not within {seconds} s: {what} (page says: {said})")
        page.wait_for_timeout(200)


def chart_pixels(page: Page) -> list[int]:
    """Per uPlot canvas, how many pixels are drawn (not transparent, not white)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#charts canvas')].map((c) => {
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0;
             for (let i = 0; i < d.length; i += 4)
               if (d[i + 3] > 0 && !(d[i] > 240 && d[i + 1] > 240 && d[i + 2] > 240)) n++;
             return n;
           })"""
    )


def operate(base: str, live: Live, shots: Path, log: list[str]) -> None:
    """Everything the operator does, in one Chromium tab."""
    bucket = "console-" + secrets.token_hex(4)
    publisher: subprocess.Popen[bytes] | None = None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=60_000
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
            page.set_default_timeout(20_000)
            page.goto(f"{base}/console")
            assert page.url == f"{base}/console/", page.url

            # A wrong key: the page says so.
            expect(page.locator("#nav")).to_be_hidden()
            page.fill("#project-id", live.project.id)
            page.fill("#api-key", "not-the-key")
            page.press("#api-key", "Enter")
            expect(page.locator("#signin-error")).to_contain_text("invalid API key")
            page.screenshot(path=shots / "01-wrong-key.png")

            # The right key; a job from the small template.
            page.fill("#api-key", live.project.key)
            page.click("#sign-in")
            expect(page.locator("#jobs")).to_contain_text("No live job yet")
            page.click("text=New job")
            page.select_option("#template", str(SMALL_TEMPLATE))
            page.fill("#file-path", "show")
            page.fill("#bucket", bucket)
            page.fill("#description", "console test")
            page.click("#create")
            expect(page.locator("#job-status")).to_contain_text("Offline")
            page.click("#online-toggle")
            expect(page.locator("#job-status")).to_contain_text("Processing")

            # The key, hidden until asked; ffmpeg publishes with it.
            assert "hidden" in (page.locator("#stream-key").text_content() or "")
            page.click("#show-key")
            key = (page.locator("#stream-key").text_content() or "").strip()
            assert len(key) == 36, key
            expect(page.locator("#ingest-url")).to_contain_text(key)
            page.click("#show-key")  # hidden again, in the ingest URL too
            expect(page.locator("#ingest-url")).not_to_contain_text(key)
            publisher = subprocess.Popen(
                ffmpeg_publish_cmd(
                    live.rtmp_url(key), size=SMALL_SIZE, seconds=LIVE_SECONDS, realtime=True
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            job_url = page.url

            # The list says Live.
            page.click("nav >> text=Jobs")
            expect(page.locator(".job-status").first).to_contain_text("Live", timeout=30_000)
            expect(page.locator("#jobs")).to_contain_text("Healthy", timeout=15_000)
            page.screenshot(path=shots / "02-jobs.png")
            page.click("#jobs a[data-job-id]")
            assert page.url == job_url, (page.url, job_url)

            # The hls.js preview plays, with its renditions to pick from.
            wait_js(
                page,
                "(document.querySelector('#preview')?.currentTime || 0) > 0",
                40,
                "preview starts",
            )
            first = page.evaluate("(document.querySelector('#preview')?.currentTime || 0)")
            wait_js(
                page,
                f"(document.querySelector('#preview')?.currentTime || 0) > {first} + 1",
                20,
                "preview advances",
            )
            levels = page.locator("#preview-level option").all_text_contents()
            assert len(levels) == 3 and any("180p" in level for level in levels), levels
            page.select_option("#preview-level", "1")

            # The charts have points, from the telemetry socket, and draw them.
            wait_js(
                page,
                "window.onairConsole.telemetry && window.onairConsole.telemetry.messages > 2"
                " && window.onairConsole.charts && window.onairConsole.charts.points().length === 3"
                " && window.onairConsole.charts.points().every((n) => n >= 3)",
                20,
                "three charts with points from the telemetry socket",
            )
            telemetry = page.evaluate(
                "() => { const t = window.onairConsole.telemetry;"
                " return { state: t.state, messages: t.messages, connections: t.connections,"
                " note: document.querySelector('#telemetry-note').textContent,"
                " sources: window.onairConsole.charts.bySource }; }"
            )
            assert telemetry["state"] == "open" and telemetry["connections"] >= 1, telemetry
            assert "Live telemetry" in telemetry["note"], telemetry
            # Every point came from the socket: /stats was not polled for the charts.
            assert telemetry["sources"]["socket"] >= 3, telemetry
            assert telemetry["sources"]["stats"] == 0, telemetry
            drawn = chart_pixels(page)
            assert len(drawn) == 3 and all(n > 100 for n in drawn), drawn

            # A restream (to a port nobody listens on): shown with its state; the toggle.
            page.fill("#restream-title", "elsewhere")
            page.fill("#restream-url", f"rtmp://127.0.0.1:{free_port()}/live")
            page.fill("#restream-key", "k")
            page.click("#restream-add")
            enabled = page.locator(".restream-enabled").first
            expect(enabled).to_have_text("enabled")
            expect(page.locator("#restreams tbody tr .badge").first).not_to_have_text("—")
            page.click(".restream-toggle")
            expect(enabled).to_have_text("disabled")

            # The WebSocket preview: plays, or says it is not there yet (either is fine).
            page.click("#ws-start")
            expect(page.locator("#ws-status")).not_to_contain_text("Asking", timeout=15_000)
            log.append("ws-status: " + (page.locator("#ws-status").text_content() or ""))

            # A cut picked on the DVR timeline: 1 s to 4 s.
            page.select_option("#preview-source", "dvr")
            wait_js(
                page,
                "(() => { const v = document.querySelector('#preview');"
                " return v.seekable.length && v.seekable.end(0) > 5 && v.currentTime > 0; })()",
                30,
                "the DVR preview plays",
            )
            for seconds, button in ((1, "#mark-from"), (4, "#mark-to")):
                page.evaluate(f"document.querySelector('#preview').currentTime = {seconds}")
                wait_js(
                    page,
                    f"Math.abs(document.querySelector('#preview').currentTime - {seconds}) < 0.5",
                    10,
                    f"seek to {seconds}",
                )
                page.click(button)
            start = float(page.input_value("#cut-from"))
            end = float(page.input_value("#cut-to"))
            assert 0.5 <= start < 1.6 and 3.5 <= end < 4.6, (start, end)
            page.fill("#cut-title", "the goal")
            page.click("#cut")
            expect(page.locator(".video-status").first).to_contain_text("Ready", timeout=60_000)
            page.click(".video-play")
            wait_js(
                page,
                "(document.querySelector('#video-player')?.currentTime || 0) > 0.5",
                20,
                "the video plays",
            )

            # The key rotated (the live goes on): a new key shows.
            page.click("#rotate-key")
            expect(page.locator("#rotate-key")).to_contain_text("Confirm")
            page.click("#rotate-key")
            expect(page.locator("#flash")).to_contain_text("New stream key")
            page.click("#show-key")
            expect(page.locator("#stream-key")).not_to_have_text(key)
            page.click("#show-key")
            page.screenshot(path=shots / "03-job.png", full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=shots / "04-phone.png", full_page=True)
            page.set_viewport_size({"width": 1100, "height": 900})
            page.locator("#preview-card").scroll_into_view_if_needed()
            page.evaluate("window.scrollTo(0, 0)")
            # the README's picture, refreshed on request only (a run leaves the tree clean)
            refresh = bool(os.environ.get("ONAIR_DOCS_SCREENSHOT"))
            docs = REPO / "docs" / "console.png" if refresh else shots / "05-docs.png"
            page.screenshot(path=docs, full_page=True)

            # The telemetry socket refused (closed before any message): the page says so
            # and its charts fall back to polling /stats.
            page.route_web_socket(re.compile(r"/livejobs/[^/]+/events"), lambda ws: ws.close())
            page.reload()
            expect(page.locator("#telemetry-note")).to_contain_text(
                "Telemetry socket unavailable", timeout=15_000
            )
            wait_js(
                page,
                "window.onairConsole.charts && window.onairConsole.charts.bySource.stats >= 2"
                " && window.onairConsole.charts.bySource.socket === 0"
                " && window.onairConsole.charts.points().every((n) => n >= 2)",
                25,
                "the charts polled from /stats",
            )
            errors = [line for line in log if line.startswith("pageerror")]
            assert not errors, errors
        finally:
            if publisher is not None:
                publisher.kill()
                publisher.wait()
            browser.close()


async def test_the_console_runs_a_live(live: Live, tmp_path: Path) -> None:
    base = str(live.server.make_url("")).rstrip("/")
    log: list[str] = []
    try:
        await asyncio.to_thread(operate, base, live, tmp_path, log)
    finally:  # shown by pytest when the test fails
        print("browser console:\n  " + "\n  ".join(log[-60:]))


async def test_the_console_files_are_served_with_their_headers(live: Live) -> None:
    base = str(live.server.make_url("")).rstrip("/")
    async with live.session.get(f"{base}/console/", allow_redirects=False) as index:
        assert index.status == 200
        assert index.headers["Cache-Control"] == "no-cache"
        assert "script-src 'self'" in index.headers["Content-Security-Policy"]
        assert "console.js" in await index.text()
    async with live.session.get(f"{base}/console/vendor/hls.mjs") as vendor:
        assert vendor.status == 200 and vendor.content_type == "text/javascript"
    for path in ("/console/vendor/package.json", "/console/..%2Fapp.py", "/console/nope.js"):
        async with live.session.get(base + path) as missing:
            assert missing.status == 404, path
            assert "console:" in await missing.text()
