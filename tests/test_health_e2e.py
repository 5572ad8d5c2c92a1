"""A live's input health with real publishers (`refresh-status`, `stats`, `/metrics`,
timings): Unknown before media, Healthy in real time, Starving when the publisher
slows to half speed and Healthy again once it has kept up for 10 s, Starving when it
leaves; onair's own encoder falling behind is `encoderOverloaded`, never Starving."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from encoder.video import RenditionWorker
from tests.support.media import SMALL_TEMPLATE
from tests.support.publishers import publish, pyav_publish_cmd, run_process
from tests.support.service import Live, make_projects

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # real time, the whole service

Sample = tuple[str, str, frozenset[str]]  # statusName, healthStatusName, reason types


def refresh_url(live: Live, video_id: object, project_id: str | None = None) -> str:
    base = str(live.server.make_url("")).rstrip("/")
    return f"{base}/api/v1/{project_id or live.project.id}/live-hubs/{video_id}/refresh-status"


async def refresh(live: Live, video_id: object) -> dict[str, Any]:
    async with live.session.post(
        refresh_url(live, video_id), headers=live.project.headers
    ) as response:
        body = await response.json()
        assert response.status == 200, body
    assert body["success"] and body["statusCode"] == 200
    return body["result"]  # type: ignore[no-any-return]


async def sample(live: Live, job: dict[str, Any]) -> Sample:
    result = await refresh(live, job["name"])
    types = frozenset(reason["type"] for reason in result["healthReasons"])
    return result["statusName"], result["healthStatusName"], types


async def watch(live: Live, job: dict[str, Any], until: Callable[[], bool]) -> list[Sample]:
    """refresh-status every 0.25 s until `until()`."""
    seen = []
    while not until():
        seen.append(await sample(live, job))
        await asyncio.sleep(0.25)
    return seen


def changes(samples: list[Sample]) -> list[str]:
    """The health names seen, each change once."""
    names: list[str] = []
    for _, health, _ in samples:
        if not names or names[-1] != health:
            names.append(health)
    return names


async def health_timings(live: Live, job: dict[str, Any]) -> list[str]:
    rows = await live.timings(job)  # oldest first
    return [t["messageComment"] for t in rows if t["childStatus"] == "HealthChanged"]


async def test_a_half_speed_publisher_starves_recovers_and_starves_once_gone(live: Live) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, "health-" + secrets.token_hex(4), "slow")
    waiting = await refresh(live, job["name"])
    unknown = {"statusName": "Processing", "healthStatusName": "Unknown", "healthReasons": []}
    assert waiting == unknown
    assert await refresh(live, job["id"]) == waiting  # the integer id too

    # 6 s in real time, 4 s of media at half speed (8 s), then 20 s in real time.
    command = pyav_publish_cmd(
        live.rtmp_url(job["key"]), "libx264", 320, 180, 30, 30, pace="1:6,0.5:4,1:20"
    )
    publisher = asyncio.create_task(run_process(command, within=90))
    seen = await watch(live, job, publisher.done)
    code, stderr = await publisher
    assert code == 0, stderr
    await live.wait_status(job, 4)  # Interrupted: the publisher left
    gone = await sample(live, job)

    assert changes(seen)[:4] == ["Unknown", "Healthy", "Starving", "Healthy"], seen
    assert ("Live", "Healthy", frozenset()) in seen
    starving = [types for _, health, types in seen if health == "Starving"]
    assert any("driftGrowing" in types for types in starving), starving
    assert not any("encoderOverloaded" in types for _, _, types in seen)
    assert gone == ("Interrupted", "Starving", frozenset({"publisherGone"}))

    stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
    assert stats["healthStatusName"] == "Starving"
    assert [r["type"] for r in stats["healthReasons"]] == ["publisherGone"]
    assert "went away" in stats["healthReasons"][0]["description"]
    metrics = await scrape_health(live, job)
    assert metrics == {"healthy": 0.0, "starving": 1.0, "unknown": 0.0}

    # Each change a timing row, naming its reasons.
    messages = await wait_health_timings(live, job, 4)
    assert messages[0] == "Unknown -> Healthy"
    assert messages[1].startswith("Healthy -> Starving: ") and "driftGrowing (" in messages[1]
    assert messages[2] == "Starving -> Healthy"
    assert messages[3].startswith("Healthy -> Starving: publisherGone (")

    # Offline: no input any more.
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    assert await sample(live, job) == ("Offline", "Unknown", frozenset())
    messages = await wait_health_timings(live, job, 5)
    assert messages[4] == "Starving -> Unknown"


async def wait_health_timings(live: Live, job: dict[str, Any], count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while len(messages := await health_timings(live, job)) < count:
        assert time.monotonic() < deadline, messages
        await asyncio.sleep(0.2)
    return messages


async def scrape_health(live: Live, job: dict[str, Any]) -> dict[str, float]:
    """`onair_job_health` of the job, by state."""
    async with live.session.get(live.server.make_url("/metrics")) as response:
        text = await response.text()
    found = {}
    for line in text.splitlines():
        if line.startswith("onair_job_health{") and f'live_job="{job["id"]}"' in line:
            state = line.split('state="')[1].split('"')[0]
            found[state] = float(line.rsplit(" ", 1)[1])
    return found


async def test_unknown_and_other_projects_live_videos_are_not_found(live: Live) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, "health-" + secrets.token_hex(4), "none")
    other = make_projects(live.settings.db_path, 1)[0]
    for url, headers in (
        (refresh_url(live, "00000000-0000-4000-8000-000000000000"), live.project.headers),
        (refresh_url(live, 999999), live.project.headers),
        (refresh_url(live, job["name"], other.id), other.headers),
        (refresh_url(live, job["id"], other.id), other.headers),
    ):
        async with live.session.post(url, headers=headers) as response:
            body = await response.json()
            assert response.status == 404, body
            assert body["success"] is False and body["result"] is None


async def test_an_overloaded_encoder_is_reported_apart_and_never_starving(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = RenditionWorker._encode_frame

    def slowly(worker: RenditionWorker, item: Any) -> None:
        time.sleep(0.1)  # at most 10 fps per rendition: the 30 fps input drops here
        encode(worker, item)

    monkeypatch.setattr(RenditionWorker, "_encode_frame", slowly)
    job = await live.create_online_job(SMALL_TEMPLATE, "health-" + secrets.token_hex(4), "cpu")
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 14))
    seen = await watch(live, job, publisher.done)
    done = await publisher
    assert done.returncode == 0, done.stderr

    # While the publisher is connected (the last samples may see it gone before the
    # status says Interrupted: that is publisherGone, the input's own end).
    publishing = [s for s in seen if s[0] == "Live" and "publisherGone" not in s[2]]
    assert any("encoderOverloaded" in types for _, _, types in publishing), seen
    assert all(health == "Healthy" for _, health, _ in publishing), seen
    assert not any(types - {"encoderOverloaded"} for _, _, types in publishing), seen
    stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
    assert stats["droppedFrames"] + sum(o["droppedFrames"] for o in stats["outputs"]) > 0
    messages = await health_timings(live, job)
    assert messages[0] == "Unknown -> Healthy"
    assert not any("Healthy -> Starving" in m and "publisherGone" not in m for m in messages)
