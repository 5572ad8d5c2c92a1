"""Shared fixtures: a real SeaweedFS S3 server, free ports, media helpers."""

from __future__ import annotations

import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from packager.s3server import EmbeddedS3, S3Ports


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block() -> int:
    """A base port P such that every port SeaweedFS derives from P is free."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(20000)
        if all(_port_free(p) for p in S3Ports(base).all()):
            return base
    raise RuntimeError("no free port block for SeaweedFS")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    """One real SeaweedFS S3 server for the whole session."""
    if shutil.which("weed") is None:
        from packager.s3server import find_weed

        find_weed()  # raises a clear error if the binary is missing
    server = EmbeddedS3(
        tmp_path_factory.mktemp("seaweed"),
        free_port_block(),
        access_key="test-" + secrets.token_hex(8),
        secret_key=secrets.token_urlsafe(24),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_client(s3_server: EmbeddedS3):  # type: ignore[no-untyped-def]
    """A boto3 client on the test S3 server."""
    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3_client) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty bucket."""
    name = "test-" + secrets.token_hex(6)
    s3_client.create_bucket(Bucket=name)
    return name


def media_tmp(tmp_path: Path, name: str) -> Path:
    return tmp_path / name


# Modules whose tests take seconds each (real-time publishers, the whole service,
# SeaweedFS restarts, long fuzzing or simulated days): marked `slow`, which
# `make test-fast` leaves out (`make test` runs them). Measured with --durations.
SLOW_MODULES = frozenset(
    {
        "test_live_e2e.py",
        "test_outage_e2e.py",
        "test_shutdown_e2e.py",
        "test_limits_e2e.py",
        "test_admission_e2e.py",
        "test_ownership_e2e.py",
        "test_connection_limits_e2e.py",
        "test_s3server.py",
        "test_s3server_lifecycle.py",
        "test_s3server_security.py",
        "api/test_service.py",
        "api/test_http_limits.py",
        "api/test_key_rotation.py",
        "api/test_ownership.py",
        "encoder/test_live_encoder.py",
        "encoder/test_bandwidth.py",
        "ingest/test_fuzz.py",
        "ingest/test_server_publishers.py",
        "ingest/test_backpressure.py",
        "packager/test_day.py",
    }
)
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(TESTS).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
