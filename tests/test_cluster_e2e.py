"""Several encoding hosts sharing one store: real `onair run` processes on one real
PostgreSQL and one SeaweedFS, publishers (the ffmpeg CLI) reaching them through a TCP
round-robin balancer (`tests.support.cluster`). Lives spread over the hosts; a host killed outright
(SIGKILL) costs its lives a reconnect: once its leases expire, the publisher's next
attempt through the balancer is admitted by another host, which takes the lease over
and continues the same recording. A host stopped with SIGTERM hands its lives over at
once. The same key published on two hosts at the same instant: one wins."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
import pytest
from botocore.exceptions import ClientError

from packager.s3server import EmbeddedS3
from tests.support.cluster import Cluster, Host, admitted_through, cluster_of, publisher
from tests.support.media import ffmpeg_warnings
from tests.support.nginx import NginxRtmp
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.srt import srt_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TAKEOVER_BOUND_SECONDS = 25.0  # the lease expires after 20 s without a heartbeat


async def test_a_killed_host_costs_a_reconnect_and_the_live_goes_on_elsewhere(
    tmp_path: Path, postgres_url: str, s3_server: EmbeddedS3, s3_client: Any
) -> None:
    nginx = NginxRtmp(tmp_path / "nginx")  # the restream's platform
    async with (
        cluster_of(
            3, tmp_path, postgres_url, s3_server, ONAIR_OUTBOUND_ALLOW_PRIVATE="true"
        ) as cluster,
        nginx_running(nginx),
    ):
        jobs = [await cluster.online_job(f"spread-{i}") for i in range(5)]
        url = f"rtmp://127.0.0.1:{cluster.balancer.port}/live/"
        publishers = [publisher(url + job["key"], 90) for job in jobs]
        try:
            for job in jobs:
                await cluster.wait_status(job, 3)
            encoders = [await cluster.encoder_of(job) for job in jobs]
            assert len(set(encoders)) == 3, encoders  # round robin spread them over 3 hosts
            victim = encoders[0]
            dead = next(h for h in cluster.hosts if h.encoder_id() == victim)
            assert sorted(h.encoder_id() for h in cluster.hosts) == [1, 2, 3]  # from the store
            moved = [job for job, e in zip(jobs, encoders, strict=True) if e == victim]
            stayed = [job for job, e in zip(jobs, encoders, strict=True) if e != victim]
            # A restream of a live of the host to be killed, made through another host:
            # the live's host forwards it, and any host tells how it goes.
            elsewhere = next(h for h in cluster.hosts if h is not dead)
            restream = await cluster.call(
                "POST",
                "/restreams",
                elsewhere,
                projects=False,
                json={
                    "videoId": jobs[0]["name"],
                    "title": "platform",
                    "streamUrl": nginx.rtmp_url("live1"),
                    "streamKey": "moved",
                    "status": True,
                },
            )
            await restream_forwarding(cluster, elsewhere, jobs[0], restream)
            for job in moved:
                await recorded(s3_client, job, RECORDED_BEFORE_KILL)
            lock_keys = {job["id"]: await cluster.lock_keys(job) for job in moved}
            dead.stop(signal.SIGKILL)
            killed_at = time.monotonic()
            for job in moved:
                index = jobs.index(job)
                publishers[index].kill()
                publishers[index], admitted_at = await admitted_through(
                    cluster, job, 30, TAKEOVER_BOUND_SECONDS + 10
                )
                print(
                    f"job {job['id']}: admitted elsewhere {admitted_at - killed_at:.1f} s"
                    " after its host was killed"
                )
                assert admitted_at - killed_at <= TAKEOVER_BOUND_SECONDS
                now_on = await cluster.encoder_of(job)
                assert now_on != victim
                assert not await cluster.lock_keys(job) & lock_keys[job["id"]]  # a new lease
                detail = await cluster.call("GET", f"/livejobs/{job['id']}")
                assert detail["argoResourceName"] == f"host-{now_on}" or any(
                    h.name == detail["argoResourceName"] and h.encoder_id() == now_on
                    for h in cluster.hosts
                ), detail["argoResourceName"]
                takeover = [t for t in await cluster.timings(job) if t["childStatus"] == "Takeover"]
                assert (
                    len(takeover) == 1 and f"from encoder {victim}" in takeover[0]["messageComment"]
                )
            # The restream went on from the live's new host.
            taken_at = takeover_at(await cluster.timings(jobs[0]))
            await restream_forwarding(cluster, elsewhere, jobs[0], restream)
            connected = [
                t["startDateTime"]
                for t in await cluster.timings(jobs[0])
                if t["childStatus"] == "RestreamConnected"
            ]
            assert len(connected) == 2 and connected[-1] > taken_at, connected
            for job in stayed:  # untouched: never interrupted, on the same host
                timings = await cluster.timings(job)
                statuses = [t["childStatus"] for t in timings]
                assert "PublisherDisconnected" not in statuses, "\n".join(
                    f"{t['startDateTime']} {t['childStatus']}: {t['messageComment']}"
                    for t in timings
                )
                assert "Takeover" not in statuses
                assert await cluster.status(job) == 3
            await asyncio.sleep(6)  # a few segments from the new host
        finally:
            for process in publishers:
                process.kill()
        for job in moved:
            await cluster.call("POST", f"/livejobs/{job['key']}", json={"online": False})
            event_key = f"live/{job['input']['filePath']}/source/event.m3u8"
            playlist = m3u8.loads(
                s3_client.get_object(Bucket=job["bucket"], Key=event_key)["Body"].read().decode()
            )
            names = [s.uri for s in playlist.segments]
            assert len(names) == len(set(names)) and len(names) >= 4, names  # one recording
            played = job["storageMasterFile"].rsplit("/", 1)[0] + "/source/event.m3u8"
            assert ffmpeg_warnings(played) == "", (job["id"], playlist.dumps())


RECORDED_BEFORE_KILL = 6  # segments: the next host continues a recording of some length


async def recorded(s3_client: Any, job: dict[str, Any], segments: int) -> list[str]:
    """Until the job's live playlist lists `segments` segments; their names."""
    key = f"live/{job['input']['filePath']}/source/index.m3u8"
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(ClientError):  # no bucket, no playlist yet
            body = s3_client.get_object(Bucket=job["bucket"], Key=key)["Body"].read()
            names = [s.uri for s in m3u8.loads(body.decode()).segments]
            if len(names) >= segments:
                return names
        assert time.monotonic() < deadline, f"fewer than {segments} segments recorded"
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def nginx_running(nginx: NginxRtmp) -> AsyncIterator[None]:
    await asyncio.to_thread(nginx.start)
    try:
        yield
    finally:
        await asyncio.to_thread(nginx.stop)


def takeover_at(timings: list[dict[str, Any]]) -> str:
    (taken,) = [t["startDateTime"] for t in timings if t["childStatus"] == "Takeover"]
    return str(taken)


async def restream_forwarding(
    cluster: Cluster, host: Host, job: dict[str, Any], restream: dict[str, Any]
) -> None:
    """Until `host` (which may not run the live) says the restream is forwarding."""
    deadline = time.monotonic() + 20
    while True:
        listed = await cluster.call(
            "GET", f"/live-video/{job['name']}/restreams", host, projects=False
        )
        (found,) = [r for r in listed if int(r["id"]) == int(restream["id"])]
        if found["state"] == "forwarding" and found["bytesSent"] > 0:
            return
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.5)


DRAIN_SECONDS = 2.0


async def watched_through(cluster: Cluster, host: Host, job: dict[str, Any]) -> None:
    """The live's viewing and telemetry WebSockets, asked of a host that does not run
    it: relayed to the one that does (the live's MPEG-TS; its outputs' live figures)."""
    base = f"ws://127.0.0.1:{host.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{base}/websocketplay/{job['name']}") as viewer:
            received = b""
            while len(received) < 64 * 1024:
                message = await asyncio.wait_for(viewer.receive(), 10)
                assert message.type is aiohttp.WSMsgType.BINARY, message
                received += message.data
        assert received[0] == 0x47 and received[188] == 0x47  # MPEG-TS packets
        events = f"{base}/api/v1/projects/{cluster.project_id}/livejobs/{job['id']}/events"
        async with session.ws_connect(events, headers=cluster.headers) as telemetry:
            figures = json.loads((await asyncio.wait_for(telemetry.receive(), 10)).data)
        assert figures["status"] == 3 and figures["outputs"], figures  # the owner's figures
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # no key, no relay
            await session.ws_connect(events)
        assert refused.value.status == 401


async def test_one_key_on_two_hosts_at_once_one_wins_and_a_drained_host_hands_over(
    tmp_path: Path, postgres_url: str, s3_server: EmbeddedS3
) -> None:
    async with cluster_of(
        2, tmp_path, postgres_url, s3_server, ONAIR_DRAIN_SECONDS=str(DRAIN_SECONDS)
    ) as cluster:
        job = await cluster.online_job("raced")
        urls = [f"rtmp://127.0.0.1:{h.rtmp_port}/live/{job['key']}" for h in cluster.hosts]
        both = [publisher(url, 60) for url in urls]  # the same instant, one on each host
        try:
            await cluster.wait_status(job, 3)
            await asyncio.sleep(3)
            running = [p for p in both if p.poll() is None]
            assert len(running) == 1, [p.poll() for p in both]  # the other one was refused
            timings = await cluster.timings(job)
            statuses = [t["childStatus"] for t in timings]
            assert statuses.count("PublisherConnected") == 1, statuses
            refused = [
                t["messageComment"] for t in timings if t["childStatus"] == "PublisherRefused"
            ]
            assert refused and all("lease is held by encoder" in r for r in refused), refused
            winner = cluster.hosts[both.index(running[0])]
            other = next(h for h in cluster.hosts if h is not winner)
            assert await cluster.encoder_of(job) == winner.encoder_id()
            await watched_through(cluster, other, job)

            # SIGTERM: the winner drains (no new publisher; its live goes on for the
            # drain), then ends the live and releases the lease: the other host admits the
            # publisher's next attempt at once.
            assert winner.process is not None
            winner.process.send_signal(signal.SIGTERM)
            winner.stopping = True
            stopped_at = time.monotonic()
            await asyncio.sleep(DRAIN_SECONDS / 2)
            assert running[0].poll() is None  # still live during the drain
            await asyncio.to_thread(running[0].wait, DRAIN_SECONDS + 20)
            dropped_at = time.monotonic()
            url = f"rtmp://127.0.0.1:{other.rtmp_port}/live/{job['key']}"
            deadline = dropped_at + 10
            while True:
                attempt = publisher(url, 30)
                both.append(attempt)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.to_thread(attempt.wait), 1.0)
                if attempt.poll() is None and await cluster.encoder_of(job) == other.encoder_id():
                    break
                assert time.monotonic() < deadline, await cluster.timings(job)
            taken_at = time.monotonic()
            print(f"handed over {taken_at - dropped_at:.1f} s after the drained host let go")
            assert taken_at - dropped_at < 5.0
            code = await asyncio.to_thread(winner.process.wait, DRAIN_SECONDS + 20)
            print(f"the drained host exited {time.monotonic() - stopped_at:.1f} s after SIGTERM")
            assert code == 0 and time.monotonic() - stopped_at <= DRAIN_SECONDS + 20
            statuses = [t["childStatus"] for t in await cluster.timings(job)]
            assert "Takeover" not in statuses  # a clean handover: the lease was released
        finally:
            for process in both:
                process.kill()


async def test_a_host_that_lost_its_lease_while_stopped_writes_nothing_after_the_takeover(
    tmp_path: Path, postgres_url: str, s3_server: EmbeddedS3, s3_client: Any
) -> None:
    async with cluster_of(2, tmp_path, postgres_url, s3_server) as cluster:
        first, second = cluster.hosts
        job = await cluster.online_job("frozen")
        publishers = [publisher(f"rtmp://127.0.0.1:{first.rtmp_port}/live/{job['key']}", 90)]
        try:
            await cluster.wait_status(job, 3)
            assert await cluster.encoder_of(job) == first.encoder_id()
            await asyncio.sleep(5)  # a few segments from the first host
            assert first.process is not None
            first.process.send_signal(signal.SIGSTOP)  # frozen: no heartbeat, no write
            first.stopping = True
            stopped_wall = time.time()
            publishers[0].kill()  # the publisher gives up on it and tries again elsewhere
            url = f"rtmp://127.0.0.1:{second.rtmp_port}/live/{job['key']}"
            deadline = time.monotonic() + TAKEOVER_BOUND_SECONDS + 10
            while await cluster.encoder_of(job) != second.encoder_id():
                assert time.monotonic() < deadline, await cluster.timings(job)
                attempt = publisher(url, 60)
                publishers.append(attempt)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.to_thread(attempt.wait), 1.0)
            await asyncio.sleep(max(0.0, stopped_wall + 30 - time.time()))  # 30 s frozen
            first.process.send_signal(signal.SIGCONT)
            woke_wall = time.time()
            first.stopping = False
            await asyncio.sleep(8)  # its next heartbeat (5 s) finds the lease lost
            assert first.process.poll() is None  # the host goes on; its pipeline stopped
            timings = await cluster.timings(job)
            lost = [t["messageComment"] for t in timings if t["childStatus"] == "LeaseLost"]
            assert len(lost) == 1 and f"encoder {first.encoder_id()} lost" in lost[0], timings
            assert f"encoder {second.encoder_id()} holds it" in lost[0]
            assert await cluster.status(job) == 3  # live on the second host
        finally:
            for process in publishers:
                process.kill()
        prefix = f"live/{job['input']['filePath']}/"
        listing = s3_client.list_objects_v2(Bucket=job["bucket"], Prefix=prefix)["Contents"]
        writers: dict[str, tuple[str, float]] = {}
        for item in listing:
            head = s3_client.head_object(Bucket=job["bucket"], Key=item["Key"])
            writers[item["Key"]] = (
                head["Metadata"].get("onair-encoder", ""),
                head["LastModified"].timestamp(),
            )
        late = {
            key: (encoder, when)
            for key, (encoder, when) in writers.items()
            if encoder == str(first.encoder_id()) and when >= int(woke_wall)
        }
        assert late == {}, late  # nothing of the frozen host's after it woke
        assert {e for e, _ in writers.values()} == {
            str(first.encoder_id()),
            str(second.encoder_id()),
        }
        playlist = f"{prefix}source/index.m3u8"
        assert writers[playlist][0] == str(second.encoder_id())  # the new host's, last
        print(
            f"woke {woke_wall - stopped_wall:.0f} s after it was frozen;"
            f" {len(writers)} objects checked"
        )


async def wait_timing(cluster: Cluster, job: dict[str, Any], child: str, within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = [t for t in await cluster.timings(job) if t["childStatus"] == child]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, (child, await cluster.timings(job))
        await asyncio.sleep(0.2)


def publishing(protocol: str, host: Host, app: str, key: str) -> subprocess.Popen[bytes]:
    """ffmpeg publishing 60 s to `host` over RTMP or SRT, on `app` (live, backup)."""
    if protocol == "rtmp":
        return publisher(f"rtmp://127.0.0.1:{host.rtmp_port}/{app}/{key}", 60)
    url = srt_url(int(host.env["ONAIR_SRT_PORT"]), f"#!::r={app}/{key},m=publish")
    command = ffmpeg_publish_cmd(
        url, size="320x180", seconds=60, realtime=True, output=["-f", "mpegts", url]
    )
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("protocol", ["rtmp", "srt"])
async def test_a_standard_jobs_backup_on_another_host_is_relayed_and_fails_over(
    protocol: str, tmp_path: Path, postgres_url: str, s3_server: EmbeddedS3, s3_client: Any
) -> None:
    """The balancer sent the backup publisher to the host without the lease: that host
    relays it (over RTMP, whatever the publisher's protocol) to the lease holder, where
    it is the job's backup input; the primary killed, the live fails over to it. A
    relay without the holder's token is refused."""
    async with cluster_of(2, tmp_path, postgres_url, s3_server) as cluster:
        holder, relay = cluster.hosts
        job = await cluster.online_job(
            f"relayed-{protocol}",
            inputClass=1,
            inputLossThresholdMs=1000,
            serverType=0 if protocol == "rtmp" else 1,
        )
        primary = publishing(protocol, holder, "live", job["key"])
        publishers = [primary]
        try:
            await cluster.wait_status(job, 3)
            assert await cluster.encoder_of(job) == holder.encoder_id()
            backup = publishing(protocol, relay, "backup", job["key"])
            publishers.append(backup)
            relayed = await wait_timing(cluster, job, "PublisherRelayed", 15)
            assert "on the backup input" in relayed["messageComment"], relayed
            assert f"relayed to encoder {holder.encoder_id()}" in relayed["messageComment"]
            deadline = time.monotonic() + 15
            while True:  # the holder's own view: the backup connected and sending
                stats = await cluster.call("GET", f"/livejobs/{job['id']}/stats", holder)
                inputs = {i["name"]: i for i in stats[0]["inputs"]}
                if inputs["backup"]["connected"] and inputs["backup"]["sending"]:
                    break
                assert time.monotonic() < deadline, inputs
                await asyncio.sleep(0.5)
            assert inputs["primary"]["active"], inputs
            connected = [
                t["messageComment"]
                for t in await cluster.timings(job)
                if t["childStatus"] == "PublisherConnected"
            ]
            assert any("(app relay-backup)" in c for c in connected), connected

            # A relay not made by a host of the store: refused before any media.
            forged = publisher(f"rtmp://127.0.0.1:{holder.rtmp_port}/relay-backup/{job['key']}", 10)
            publishers.append(forged)
            assert await asyncio.to_thread(forged.wait, 15) != 0
            refused = [
                t["messageComment"]
                for t in await cluster.timings(job)
                if t["childStatus"] == "PublisherRefused"
            ]
            assert any("without this host's token" in r for r in refused), refused

            await recorded(s3_client, job, 2)  # from the primary
            primary.kill()
            failover = await wait_timing(cluster, job, "InputFailover", 10)
            assert "primary -> backup" in failover["messageComment"], failover
            at_failover = await recorded(s3_client, job, 2)
            await recorded(s3_client, job, len(at_failover) + 2)  # the backup's, relayed
            assert await cluster.status(job) == 3
            assert await cluster.encoder_of(job) == holder.encoder_id()

            backup.kill()  # the relay ends with its publisher
            ended = await wait_timing(cluster, job, "RelayEnded", 10)
            assert f"relayed to encoder {holder.encoder_id()}" in ended["messageComment"], ended
        finally:
            for process in publishers:
                process.kill()
        await cluster.call("POST", f"/livejobs/{job['key']}", json={"online": False})
        played = job["storageMasterFile"].rsplit("/", 1)[0] + "/source/event.m3u8"
        assert ffmpeg_warnings(played) == ""  # one recording, across the switch
