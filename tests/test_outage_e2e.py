"""A storage outage in the middle of a live loses nothing (real publisher, real SeaweedFS)."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import m3u8
import pytest
from botocore.config import Config

from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_TEMPLATE
from tests.support.ports import free_port_block
from tests.support.publishers import publish
from tests.support.service import Live, start_live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # real time, the whole service

OUTAGE_SECONDS = 20.0


@pytest.fixture
def own_s3(tmp_path: Path) -> Any:
    server = EmbeddedS3(
        tmp_path / "s3", free_port_block(), "outage-" + secrets.token_hex(4),
        secrets.token_urlsafe(20),
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def outage_live(tmp_path: Path, own_s3: EmbeddedS3) -> AsyncIterator[Live]:
    client = boto3.client(
        "s3", endpoint_url=own_s3.endpoint, aws_access_key_id=own_s3.access_key,
        aws_secret_access_key=own_s3.secret_key, region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )  # fmt: skip
    async for running in start_live(tmp_path, own_s3, client):
        yield running


class PlaylistWatcher(threading.Thread):
    """Reads the live playlist whenever S3 answers; every listed segment must exist."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        super().__init__(daemon=True)
        self.client, self.bucket, self.key = client, bucket, key
        self.stop_event = threading.Event()
        self.missing: list[str] = []
        self.reads = 0

    def run(self) -> None:
        folder = self.key.rsplit("/", 1)[0]
        while not self.stop_event.is_set():
            try:
                text = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
            except Exception:
                text = None  # S3 down, or no playlist yet: nothing to check
            if text is not None:
                for segment in m3u8.loads(text.decode()).segments:
                    try:
                        self.client.head_object(Bucket=self.bucket, Key=f"{folder}/{segment.uri}")
                    except self.client.exceptions.ClientError as error:
                        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                            self.missing.append(segment.uri)
                    except Exception:
                        break  # S3 went down mid-check
                else:
                    self.reads += 1
            time.sleep(0.3)


async def test_s3_outage_mid_live_loses_no_segment(outage_live: Live, own_s3: EmbeddedS3) -> None:
    live = outage_live
    bucket = "outage-" + secrets.token_hex(4)
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "show")
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 36))
    await live.wait_status(job, 3)
    watcher = PlaylistWatcher(live.s3, bucket, "live/show/180p/index.m3u8")
    watcher.start()
    await asyncio.sleep(5)
    await asyncio.to_thread(own_s3.stop)
    await asyncio.sleep(OUTAGE_SECONDS)
    await asyncio.to_thread(own_s3.start)
    done = await publisher
    assert done.returncode == 0, done.stderr
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})

    deadline = time.monotonic() + 90
    while True:  # the catch-up may still be running when the offline call answers
        try:
            event = m3u8.loads(live.get_text(bucket, "live/show/180p/event.m3u8"))
            if event.is_endlist:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "the live never ended in the bucket"
        await asyncio.sleep(0.5)
    watcher.stop_event.set()
    watcher.join(5)

    assert watcher.reads > 0 and watcher.missing == []
    names = [s.uri for s in event.segments]
    assert names == [f"seg_{i:06d}.ts" for i in range(len(names))]  # none skipped
    for name in names:
        live.s3.head_object(Bucket=bucket, Key=f"live/show/180p/{name}")
    assert abs(sum(s.duration for s in event.segments) - 36.0) <= 2.0
    timings = [t["childStatus"] for t in await live.timings(job)]
    assert "StorageOutage" in timings and "StorageRecovered" in timings
    assert timings.index("StorageOutage") < timings.index("StorageRecovered")
