"""Fixtures for the packager tests: a real TS ladder made once per session (ffmpeg CLI)."""

from __future__ import annotations

import shutil

import pytest

from tests.support.media import Ladder, make_ladder


@pytest.fixture(scope="session")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    """Ten real MPEG-TS segments (video + audio) per rendition, three renditions."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg CLI not installed")
    return make_ladder(tmp_path_factory.mktemp("ladder"))
