"""Fixtures for ingest tests: an admission harness and RTMP servers on free ports."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.rtmp.server import RtmpServer
from tests.support.fakes import Harness
from tests.support.publishers import ffmpeg_sample
from tests.support.rtmp_client import StartServer


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


def _ffmpeg_sample(
    factory: pytest.TempPathFactory, name: str, output: list[str], extra: tuple[str, ...] = ()
) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg CLI not installed")
    return ffmpeg_sample(factory.mktemp("media") / name, output, extra)


@pytest.fixture(scope="session")
def flv_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 320x240@30 H.264 + 48 kHz mono AAC as FLV, made by the ffmpeg CLI."""
    return _ffmpeg_sample(tmp_path_factory, "sample.flv", ["-f", "flv"])


@pytest.fixture(scope="session")
def ts_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same as flv_sample, as MPEG-TS (what an SRT publisher sends)."""
    return _ffmpeg_sample(tmp_path_factory, "sample.ts", ["-f", "mpegts"])


@pytest.fixture(scope="session")
def flv_sample_no_b_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flv_sample without B-frames: every frame's presentation time is its arrival."""
    return _ffmpeg_sample(tmp_path_factory, "nob.flv", ["-f", "flv"], ("-bf", "0"))


@pytest.fixture(scope="session")
def ts_sample_no_b_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ffmpeg_sample(tmp_path_factory, "nob.ts", ["-f", "mpegts"], ("-bf", "0"))
