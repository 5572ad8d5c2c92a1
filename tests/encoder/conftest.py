"""Sources for the encoder tests, generated once per test session (ffmpeg CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.media import make_source


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoder-media")


@pytest.fixture(scope="session")
def source_720p(media_dir: Path) -> Path:
    """6 s of 1280x720@30, keyframe every second, stereo AAC, as FLV (RTMP's framing)."""
    return make_source(media_dir / "720p.flv", 1280, 720, 6)


@pytest.fixture(scope="session")
def source_360p(media_dir: Path) -> Path:
    """3 s of 640x360@30 + AAC, FLV."""
    return make_source(media_dir / "360p.flv", 640, 360, 3)


@pytest.fixture(scope="session")
def source_480p(media_dir: Path) -> Path:
    """3 s of 854x480@30 + AAC, FLV."""
    return make_source(media_dir / "480p.flv", 854, 480, 3)
