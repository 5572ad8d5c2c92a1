"""Fixtures for ingest tests: an admission harness and RTMP servers on free ports."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.rtmp.server import RtmpServer
from tests.ingest.helpers import Harness

StartServer = Callable[..., Awaitable[RtmpServer]]


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(refused_keys=["forbidden"])
    yield h
    h.close()


@pytest.fixture
async def start_server(harness: Harness) -> AsyncIterator[StartServer]:
    """start_server(**options) -> a started RtmpServer on 127.0.0.1, a free port."""
    servers: list[RtmpServer] = []

    async def start(**options: Any) -> RtmpServer:
        options.setdefault("admit", harness.admit)
        server = RtmpServer(host="127.0.0.1", port=0, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture(scope="session")
def flv_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 320x240@30 H.264 + 48 kHz mono AAC as FLV, made by the ffmpeg CLI."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg CLI not installed")
    path = tmp_path_factory.mktemp("flv") / "sample.flv"
    from tests.ingest.helpers import ffmpeg_publish_cmd

    cmd = ffmpeg_publish_cmd("", output=["-f", "flv", str(path)])
    subprocess.run(cmd, check=True, timeout=60)
    return path


def _made_by_ffmpeg(
    factory: pytest.TempPathFactory, name: str, output: list[str], extra: list[str]
) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg CLI not installed")
    from tests.ingest.helpers import ffmpeg_publish_cmd

    path = factory.mktemp("media") / name
    cmd = ffmpeg_publish_cmd("", extra=extra, output=[*output, str(path)])
    subprocess.run(cmd, check=True, timeout=60)
    return path


@pytest.fixture(scope="session")
def ts_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same as flv_sample, as MPEG-TS (what an SRT publisher sends)."""
    return _made_by_ffmpeg(tmp_path_factory, "sample.ts", ["-f", "mpegts"], [])


@pytest.fixture(scope="session")
def flv_sample_no_b_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flv_sample without B-frames: every frame's presentation time is its arrival."""
    return _made_by_ffmpeg(tmp_path_factory, "nob.flv", ["-f", "flv"], ["-bf", "0"])


@pytest.fixture(scope="session")
def ts_sample_no_b_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _made_by_ffmpeg(tmp_path_factory, "nob.ts", ["-f", "mpegts"], ["-bf", "0"])
