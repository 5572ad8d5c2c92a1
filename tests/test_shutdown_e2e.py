"""SIGTERM ends `onair run` within 20 s whatever its storage does, and the next start
uploads what could not be: `onair run` itself, its embedded SeaweedFS held stopped
(SIGSTOP: every upload hangs), a real ffmpeg publisher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import m3u8
import pytest
import requests

from tests.support.media import SMALL_RENDITIONS, SMALL_SIZE, SMALL_TEMPLATE
from tests.support.ports import free_port, free_port_block
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.service import ONAIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service

SHUTDOWN_BOUND_SECONDS = 20.0


class Service:
    """`onair run` on free ports with its embedded SeaweedFS, in a child process."""

    def __init__(self, data_dir: Path, s3_port: int) -> None:
        self.http_port = free_port()
        self.rtmp_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
        env |= {
            "ONAIR_DATA_DIR": str(data_dir),
            "ONAIR_HTTP_PORT": str(self.http_port),
            "ONAIR_RTMP_PORT": str(self.rtmp_port),
            "ONAIR_RTMP_HOST": "127.0.0.1",
            "ONAIR_S3_PORT": str(s3_port),
            "ONAIR_LOG_LEVEL": "INFO",
        }
        self.log = (data_dir.parent / f"onair-{self.http_port}.log").open("w")
        self.process = subprocess.Popen(
            [ONAIR, "run"], env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        banner: dict[str, str] = {}
        assert self.process.stdout is not None
        while "key" not in banner:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"onair run exited: {self.log_text()}")
            if line.startswith("Development project:"):
                banner["project"] = line.split()[-1]
            elif line.startswith("Development API key:"):
                banner["key"] = line.split()[-1]
        self.headers = {"Authorization": f"Bearer {banner['key']}"}
        self.api = f"http://127.0.0.1:{self.http_port}/api/v1/projects/{banner['project']}"
        credentials = json.loads((data_dir / "s3-credentials.json").read_text())
        self.s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            aws_access_key_id=credentials["accessKey"],
            aws_secret_access_key=credentials["secretKey"],
            region_name="us-east-1",
        )

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(
            method, self.api + path, headers=self.headers, timeout=30, **kwargs
        )
        assert answer.status_code < 300, answer.text
        return answer.json()["result"]

    def weed_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"weed" in cmdline:
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def listed(service: Service, key: str) -> list[str]:
    try:
        body = service.s3.get_object(Bucket="shutdown", Key=key)["Body"].read().decode()
    except (service.s3.exceptions.NoSuchKey, service.s3.exceptions.NoSuchBucket):
        return []
    return list(m3u8.loads(body).segments.uri)


def test_sigterm_with_the_storage_held_ends_in_time_and_the_next_start_uploads(
    data_dir: Path,
) -> None:
    s3_port = free_port_block()
    service = Service(data_dir, s3_port)
    weed: list[int] = []
    publisher: subprocess.Popen[bytes] | None = None
    try:
        job = service.call(
            "POST",
            "/livejobs",
            json={
                "jobTemplateId": SMALL_TEMPLATE,
                "destination": "live",
                "bucket": "shutdown",
                "input": {"filePath": "held", "serverType": 0, "inputClass": 0},
            },
        )
        service.call("POST", f"/livejobs/{job['key']}", json={"online": True})
        url = f"rtmp://127.0.0.1:{service.rtmp_port}/live/{job['key']}"
        publisher = subprocess.Popen(
            ffmpeg_publish_cmd(url, size=SMALL_SIZE, seconds=30, realtime=True),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # During the live the recording is in its parts (event.m3u8 comes at the end);
        # each rendition uploads on its own: both have 2 segments stored first.
        parts = [f"live/held/{r}/parts/part_000000.m3u8" for r in SMALL_RENDITIONS]
        deadline = time.monotonic() + 60
        while min(len(listed(service, key)) for key in parts) < 2:
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.2)
        weed = service.weed_pids()
        assert weed, "no SeaweedFS child found"
        for pid in weed:
            os.kill(pid, signal.SIGSTOP)  # every S3 call from now on hangs
        time.sleep(5)  # more segments: spooled, none can be stored

        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(SHUTDOWN_BOUND_SECONDS + 10)
        took = time.monotonic() - started
        print(f"SIGTERM to exit with the storage held: {took:.1f} s")
        assert took <= SHUTDOWN_BOUND_SECONDS, f"{took:.1f} s\n{service.log_text()}"
        assert service.process.returncode == 0, service.log_text()
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait(10)
        for pid in weed:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        service.stop()
    manifest = data_dir / "spool" / str(job["id"]) / "pending.json"
    assert manifest.exists(), "the stop left nothing to upload? (the storage was held)"
    left = json.loads(manifest.read_text())["pending"]
    assert left

    again = Service(data_dir, s3_port)  # the next start
    try:
        deadline = time.monotonic() + 60
        while True:
            rows = again.call("GET", f"/livejobs/{job['id']}/timings?pageSize=100")
            done = [r for r in rows if r["childStatus"] == "SpoolRecovered"]
            if done:
                break
            assert time.monotonic() < deadline, again.log_text()
            time.sleep(0.3)
        assert done[0]["messageComment"].startswith("uploaded and listed"), done
        for rendition in SMALL_RENDITIONS:
            names = listed(again, f"live/held/{rendition}/event.m3u8")
            numbers = [int(name[4:10]) for name in names]
            assert numbers == list(range(len(numbers))), names  # in order, no hole
            spooled = [p for p in left if p["rendition"] == rendition and p["file"]]
            assert len(numbers) >= 2 + len(spooled)
            for name in names:
                again.s3.head_object(Bucket="shutdown", Key=f"live/held/{rendition}/{name}")
        assert not list((data_dir / "spool" / str(job["id"])).rglob("*.ts"))
        assert not manifest.exists()
    finally:
        again.process.send_signal(signal.SIGTERM)
        try:
            again.process.wait(SHUTDOWN_BOUND_SECONDS + 10)
        finally:
            again.stop()
