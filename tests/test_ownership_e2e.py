"""Storage onair may write, through the real service and a real S3 (SeaweedFS): only
buckets it created or the operator listed, and never objects it did not write."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_TEMPLATE
from tests.support.publishers import publish
from tests.support.service import Live, start_live, stored_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # real time, the whole service


async def refusal(live: Live, job: dict[str, Any]) -> str:
    await live.wait_status(job, 4)  # Interrupted: the output failed
    rows = {t["childStatus"]: t["messageComment"] for t in await live.timings(job)}
    assert "PipelineFailed" in rows, rows
    return rows.get("StorageRefused", "")


async def test_a_bucket_onair_did_not_create_is_never_written(
    live: Live, bucket: str, s3_client: Any
) -> None:
    # `bucket` was made with boto3, by someone else: it is not onair's.
    s3_client.put_object(Bucket=bucket, Key="theirs.txt", Body=b"not onair's")
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "foreign-bucket")
    done = await publish(live.rtmp_url(job["key"]), 4)
    assert "did not create it" in await refusal(live, job), done.stderr
    assert stored_keys(live.s3, bucket) == ["theirs.txt"]


async def test_the_allow_list_lets_onair_use_an_existing_bucket(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any, bucket: str
) -> None:
    async for live in start_live(tmp_path, s3_server, s3_client, s3_buckets=(bucket,)):
        job = await live.create_online_job(SMALL_TEMPLATE, bucket, "listed")
        done = await publish(live.rtmp_url(job["key"]), 4)
        assert done.returncode == 0, done.stderr
        await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
        assert "live/listed/master.m3u8" in stored_keys(live.s3, bucket)


async def test_objects_onair_did_not_write_at_a_new_jobs_prefix_are_left_alone(
    live: Live,
) -> None:
    bucket = "own-" + secrets.token_hex(5)
    # onair creates the bucket
    first = await live.create_online_job(SMALL_TEMPLATE, bucket, "first")
    assert (await publish(live.rtmp_url(first["key"]), 3)).returncode == 0
    await live.call("POST", f"/livejobs/{first['key']}", json={"online": False})
    planted = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nelsewhere.m3u8\n"
    live.s3.put_object(Bucket=bucket, Key="live/second/master.m3u8", Body=planted)
    second = await live.create_online_job(SMALL_TEMPLATE, bucket, "second")
    await publish(live.rtmp_url(second["key"]), 3)
    assert "onair did not write" in await refusal(live, second)
    assert stored_keys(live.s3, bucket, "live/second/") == ["live/second/master.m3u8"]
    body = live.s3.get_object(Bucket=bucket, Key="live/second/master.m3u8")["Body"].read()
    assert body == planted  # neither continued nor overwritten
    # The first job's own recording is its own: its next live continues it.
    await live.call("POST", f"/livejobs/{first['key']}", json={"online": True})
    assert (await publish(live.rtmp_url(first["key"]), 3)).returncode == 0
    await live.call("POST", f"/livejobs/{first['key']}", json={"online": False})
    event = live.get_text(bucket, "live/first/180p/event.m3u8")
    assert event.count("#EXT-X-DISCONTINUITY") == 1
