"""Fixtures for the control API: a running app on a real socket, with two projects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from packager.s3server import EmbeddedS3
from tests.support.service import Api, running_api


@pytest.fixture
async def api(tmp_path: Path, s3_server: EmbeddedS3) -> AsyncIterator[Api]:
    async with running_api(tmp_path, s3_server) as running:
        yield running
