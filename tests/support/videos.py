"""Videos cut from a live, as a client sees them: the calls (`live-videos`, `videos`),
waiting for a video's end, and playing what it points at with ffmpeg."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from typing import Any

from tests.support.service import Live


def v2(live: Live, path: str) -> str:
    """A `/api/v2/{projectId}/...` URL of the live's service."""
    return str(live.server.make_url("")).rstrip("/") + f"/api/v2/{live.project.id}{path}"


def v1(live: Live, path: str) -> str:
    return str(live.server.make_url("")).rstrip("/") + f"/api/v1/{live.project.id}{path}"


async def request(
    live: Live, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with live.session.request(
        method, url, headers=live.project.headers if headers is None else headers, **kwargs
    ) as response:
        return response.status, await response.json()


async def wait_video(live: Live, public_id: str, within: float = 90.0) -> dict[str, Any]:
    """The video once it is no longer Processing."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        status, body = await request(live, "GET", v1(live, f"/videos/{public_id}"))
        assert status == 200, body
        if body["result"]["status"] != "Processing":
            return body["result"]  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.3)


def anonymous_get(url: str) -> int:
    """The HTTP status of a GET without credentials."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def played_seconds(url: str) -> float:
    """Decode everything `url` points at (HLS or MP4) with ffmpeg; the seconds of video
    decoded (ffprobe counts the frames), failing on any error. On a thread: the URL may
    be the service's own, served by this event loop."""
    return await asyncio.to_thread(_played_seconds, url)


def _played_seconds(url: str) -> float:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-xerror", "-i", url, "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    probe = subprocess.run(
        [
            "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
            "-show_entries", "stream=nb_read_frames,r_frame_rate", "-of", "json", url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    stream = json.loads(probe.stdout)["streams"][0]
    numerator, denominator = (int(x) for x in stream["r_frame_rate"].split("/"))
    return int(stream["nb_read_frames"]) * denominator / numerator
