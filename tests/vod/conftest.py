"""Recordings for the cut tests, made once per module: a real live (template 4, the
small ladder) encoded in-process into SeaweedFS from testsrc2 sources."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.object_store import S3Storage
from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_SIZE, make_source
from tests.support.recording import GAP_SECONDS, START, Recorded, record_live


@pytest.fixture(scope="module")
def storage(s3_server: EmbeddedS3) -> S3Storage:
    return S3Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")


@pytest.fixture(scope="module")
def module_bucket(storage: S3Storage) -> str:
    name = "vod-" + secrets.token_hex(6)
    storage.ensure_bucket(name)
    return name


def _source(tmp: Path, seconds: float) -> Path:
    width, height = (int(v) for v in SMALL_SIZE.split("x"))
    return make_source(tmp / f"src_{seconds:g}s.flv", width, height, seconds)


@pytest.fixture(scope="module")
def recorded(
    storage: S3Storage, module_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recorded]:
    """20 s of testsrc2 (burnt-in frame counter) + sine, one session."""
    tmp = tmp_path_factory.mktemp("vod-recorded")
    source = _source(tmp, 20)
    prefix = "lives/show"
    record_live(storage, module_bucket, prefix, [(source, START.timestamp())], tmp / "spool")
    yield Recorded(storage, module_bucket, prefix, source, 20.0)


@pytest.fixture(scope="module")
def gapped(
    storage: S3Storage, module_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recorded]:
    """Two 8 s sessions of one live, the second GAP_SECONDS after the first ended."""
    tmp = tmp_path_factory.mktemp("vod-gapped")
    source = _source(tmp, 8)
    second = START.timestamp() + 8 + GAP_SECONDS
    prefix = "lives/gapped"
    sessions = [(source, START.timestamp()), (source, second)]
    record_live(storage, module_bucket, prefix, sessions, tmp / "spool")
    yield Recorded(storage, module_bucket, prefix, source, 8.0)
