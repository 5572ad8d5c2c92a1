"""What a host failure costs, and what answering for another host costs (issue 18).

Three `onair run` hosts on one PostgreSQL and one SeaweedFS behind a TCP round-robin
balancer (`tests.support.cluster`), passthrough lives published by the ffmpeg CLI:

- **takeover**: `--kills` times, the host running the measured live is killed
  (SIGKILL) together with its publisher, which publishes again through the balancer
  every second; the time from the drop to the first new segment of the live in the
  bucket. The killed host is started again at once (it registers once its previous
  life is dead) for the next round.
- **API on a non-owner host**: `GET /livejobs/{id}` and `/stats` of a running live,
  asked of a host that does not run it and of the one that does, `--requests` each;
  p50 and p99.

Printed, not asserted. There is no ffmpeg CLI equivalent to compare with: the figure
to read is the takeover against the lease's 20 s expiry.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import m3u8

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packager.s3server import EmbeddedS3
from tests.support.cluster import (
    Cluster,
    admitted_through,
    publisher,
    shared_backends,
    start_cluster,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def live_segments(s3: Any, job: dict[str, Any]) -> list[str]:
    key = f"live/{job['input']['filePath']}/source/event.m3u8"
    parts = f"live/{job['input']['filePath']}/source/parts/part_000000.m3u8"
    for candidate in (key, parts):
        try:
            text = s3.get_object(Bucket=job["bucket"], Key=candidate)["Body"].read().decode()
        except s3.exceptions.NoSuchKey:
            continue
        return [segment.uri for segment in m3u8.loads(text).segments]
    return []


async def takeover(cluster: Cluster, s3: Any, job: dict[str, Any], rounds: int) -> list[float]:
    url = f"rtmp://127.0.0.1:{cluster.balancer.port}/live/{job['key']}"
    current = publisher(url, 3600)
    figures = []
    try:
        for round_no in range(1, rounds + 1):
            await cluster.wait_status(job, 3, within=60)
            await asyncio.sleep(4)  # a segment or two on this host
            owner_id = await cluster.encoder_of(job)
            owner = next(h for h in cluster.hosts if h.encoder_id() == owner_id)
            before = set(live_segments(s3, job))
            owner.stop(signal.SIGKILL)
            current.kill()
            dropped = time.monotonic()
            current, _ = await admitted_through(cluster, job, 3600, 60)
            while not set(live_segments(s3, job)) - before:  # noqa: ASYNC110 (the bucket, polled)
                await asyncio.sleep(0.1)
            figure = time.monotonic() - dropped
            figures.append(figure)
            print(f"round {round_no}: encoder {owner_id} killed, new segment after {figure:.1f} s")
            owner.start()  # back for the next round (it waits for its old life to be dead)
            await owner.wait_up(90)
    finally:
        current.kill()
    return figures


async def api_latency(cluster: Cluster, job: dict[str, Any], requests: int) -> dict[str, float]:
    owner_id = await cluster.encoder_of(job)
    owner = next(h for h in cluster.hosts if h.encoder_id() == owner_id)
    other = next(h for h in cluster.hosts if h is not owner)
    found = {}
    for label, host in (("non-owner", other), ("owner", owner)):
        times = []
        for i in range(requests):
            path = f"/livejobs/{job['id']}" + ("/stats" if i % 2 else "")
            started = time.perf_counter()
            await cluster.call("GET", path, host=host)
            times.append((time.perf_counter() - started) * 1000)
        found[f"{label} p50"] = statistics.median(times)
        found[f"{label} p99"] = percentile(times, 0.99)
    return found


async def run(kills: int, requests: int, base: Path) -> None:
    with shared_backends(base, "bench") as (store_url, s3_server):
        await measure(kills, requests, base, store_url, s3_server)


async def measure(
    kills: int, requests: int, base: Path, store_url: str, s3_server: EmbeddedS3
) -> None:
    cluster = None
    try:
        cluster = await start_cluster(3, base, store_url, s3_server)
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            region_name="us-east-1",
        )
        others = [await cluster.online_job(f"steady-{i}") for i in range(3)]
        url = f"rtmp://127.0.0.1:{cluster.balancer.port}/live/"
        steady = [publisher(url + job["key"], 3600) for job in others]
        try:
            for job in others:
                await cluster.wait_status(job, 3, within=60)
            latency = await api_latency(cluster, others[0], requests)
            measured = await cluster.online_job("measured")
            figures = await takeover(cluster, s3, measured, kills)
        finally:
            for process in steady:
                process.kill()
        print()
        print(f"takeover (publisher drop -> first new segment), {len(figures)} SIGKILLs:")
        print(
            f"  median {statistics.median(figures):.1f} s, min {min(figures):.1f} s,"
            f" max {max(figures):.1f} s (the lease expires 20 s after the last heartbeat)"
        )
        print(f"API with 3 lives running, {requests} GETs (job and stats) per host:")
        print("  " + ", ".join(f"{name} {value:.1f} ms" for name, value in latency.items()))
    finally:
        if cluster is not None:
            await cluster.balancer.stop()
            await cluster.session.close()
            for host in cluster.hosts:
                host.stop(signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onair-bench-cluster-") as base:
        asyncio.run(run(args.kills, args.requests, Path(base)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
