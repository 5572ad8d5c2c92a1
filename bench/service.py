"""Shared by the live benchmarks: a running onair (`onair run`, embedded S3) and its API."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import requests
from throughput import synthetic_source

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
ONAIR = str(Path(sys.executable).parent / "onair")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def source_720p(seconds: int, gop_seconds: int = 2) -> Path:
    """A cached 720p30 H.264 + AAC FLV source (publishers copy it, spending no CPU)."""
    return synthetic_source(
        OUT / f"src_720p30_{seconds}s.flv",
        "1280x720",
        30,
        seconds,
        ["-preset", "veryfast", "-b:v", "4M", "-g", str(30 * gop_seconds)],
    )


class Onair:
    """`onair run` with the embedded SeaweedFS, in a child process, on free ports."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        s3_port = 20000 + secrets.randbelow(20000)
        self.http_port = free_port()
        self.rtmp_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")},
            "ONAIR_DATA_DIR": str(data_dir),
            "ONAIR_HTTP_PORT": str(self.http_port),
            "ONAIR_RTMP_PORT": str(self.rtmp_port),
            "ONAIR_RTMP_HOST": "127.0.0.1",
            "ONAIR_S3_PORT": str(s3_port),
            "ONAIR_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [ONAIR, "run"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        banner: dict[str, str] = {}
        assert self.process.stdout is not None
        while "key" not in banner:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("onair run exited")
            if line.startswith("Development project:"):
                banner["project"] = line.split()[-1]
            elif line.startswith("Development API key:"):
                banner["key"] = line.split()[-1]
            elif line.startswith("S3:"):
                banner["s3"] = line.split()[1]
        self.project = banner["project"]
        self.headers = {"Authorization": f"Bearer {banner['key']}"}
        self.api = f"http://127.0.0.1:{self.http_port}/api/v1/projects/{self.project}"
        creds = (data_dir / "s3-credentials.json").read_text()
        import json

        saved = json.loads(creds)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=banner["s3"],
            aws_access_key_id=saved["accessKey"],
            aws_secret_access_key=saved["secretKey"],
            region_name="us-east-1",
        )

    def create_online_job(self, template: int, bucket: str, path: str) -> dict[str, Any]:
        body = {
            "jobTemplateId": template,
            "destination": "bench",
            "bucket": bucket,
            "input": {"filePath": path, "serverType": 0, "inputClass": 0},
        }
        job = requests.post(f"{self.api}/livejobs", json=body, headers=self.headers, timeout=10)
        job.raise_for_status()
        result: dict[str, Any] = job.json()["result"]
        requests.post(
            f"{self.api}/livejobs/{result['key']}",
            json={"online": True},
            headers=self.headers,
            timeout=10,
        ).raise_for_status()
        return result

    def offline(self, job: dict[str, Any]) -> None:
        requests.post(
            f"{self.api}/livejobs/{job['key']}",
            json={"online": False},
            headers=self.headers,
            timeout=120,
        ).raise_for_status()

    def stats(self, job: dict[str, Any]) -> dict[str, Any]:
        answer = requests.get(
            f"{self.api}/livejobs/{job['id']}/stats", headers=self.headers, timeout=10
        )
        return answer.json()["result"][0]  # type: ignore[no-any-return]

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def stop(self) -> None:
        self.process.send_signal(2)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self.process.stdout:
            self.process.stdout.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def wait_until(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False
