"""Restream fixtures: real nginx-rtmp destinations, one or two per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nginx import NginxRtmp


def _running(directory: Path) -> Iterator[NginxRtmp]:
    server = NginxRtmp(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    """A started nginx-rtmp on loopback: recording apps `live1`/`live2`, `guarded`
    (on_publish answered 403), an RTMPS front trusting `nginx.ca_file`."""
    yield from _running(tmp_path / "nginx")


@pytest.fixture
def second_nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    """Another destination, to stop and start on its own (its own CA: not trusted)."""
    yield from _running(tmp_path / "nginx2")
