"""What one publisher may take of a host, through the real service and real peers:
its picture size, the host's capacity, and the memory of the lives it runs."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_TEMPLATE
from tests.support.publishers import publish
from tests.support.service import Live, start_live, stored_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service


@pytest.fixture
def bucket() -> str:
    """A bucket onair has never seen: it creates it itself (it writes no bucket it did
    not create, unless ONAIR_S3_BUCKETS lists it)."""
    return "e2e-" + secrets.token_hex(6)


@pytest.fixture
async def small_host(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    """A host with room for one template-2 live."""
    async for running in start_live(tmp_path, s3_server, s3_client, capacity=1.0):
        yield running


def child_statuses(timings: list[dict[str, Any]]) -> list[str]:
    return [t["childStatus"] for t in timings]


@pytest.mark.parametrize("metadata", [True, False], ids=["onMetaData", "no-metadata"])
async def test_a_4k_source_is_refused(live: Live, bucket: str, metadata: bool) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, f"uhd-{metadata}")
    extra = () if metadata else ("-flvflags", "no_metadata")
    done = await publish(
        live.rtmp_url(job["key"]), 3, size="3840x2160", rate=5, realtime=False, extra=extra
    )
    assert done.returncode != 0  # the publisher is dropped
    timings = await live.timings(job)
    refused = [t for t in timings if t["childStatus"] == "SourceRefused"]
    assert len(refused) == 1, child_statuses(timings)
    assert "3840x2160" in refused[0]["messageComment"]
    assert "2073600" in refused[0]["messageComment"]  # the limit, named
    if metadata:
        # Refused at onMetaData, before any media: the job still waits for a publisher.
        assert await live.status(job) == 2
        assert "MediaStarted" not in child_statuses(timings)
    assert stored_keys(live.s3, bucket, f"live/uhd-{metadata}/") == []  # not one frame


async def test_a_host_at_capacity_refuses_the_next_live(small_host: Live, bucket: str) -> None:
    live = small_host
    first = await live.create_online_job(2, bucket, "cap-first")
    second = await live.create_online_job(2, bucket, "cap-second")
    running = asyncio.create_task(publish(live.rtmp_url(first["key"]), 8))
    await live.wait_status(first, 3)
    refused = await publish(live.rtmp_url(second["key"]), 2, realtime=False)
    assert refused.returncode != 0
    rows = [t for t in await live.timings(second) if t["childStatus"] == "PublisherRefused"]
    assert rows and "host at capacity" in rows[0]["messageComment"]
    assert re.search(r"1 of 1 units in use", rows[0]["messageComment"])
    assert await live.status(second) == 2  # still waiting: another host may take it
    assert (await running).returncode == 0
    # The first live is over: its place is free again.
    await live.call("POST", f"/livejobs/{first['key']}", json={"online": False})
    again = await publish(live.rtmp_url(second["key"]), 2)
    assert again.returncode == 0, again.stderr


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_two_720p_lives_stay_within_their_memory(live: Live, bucket: str) -> None:
    """Frame queues are bounded in bytes: the memory of two lives is a few hundred MB
    whatever their publishers do (one 4K live used to take 1.1 GB in 10 s)."""
    jobs = [await live.create_online_job(2, bucket, f"rss-{i}") for i in range(2)]
    before = rss_bytes()
    peak = before
    publishers = [
        asyncio.create_task(publish(live.rtmp_url(job["key"]), 10, size="1280x720")) for job in jobs
    ]
    while not all(p.done() for p in publishers):
        peak = max(peak, rss_bytes())
        await asyncio.sleep(0.2)
    for task in publishers:
        assert (await task).returncode == 0
    growth = peak - before
    print(f"RSS {before / 2**20:.0f} MB -> peak {peak / 2**20:.0f} MB for two 720p lives")
    assert growth < 700 * 2**20, growth
