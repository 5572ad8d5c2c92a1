"""Shared fixtures: a real SeaweedFS S3 server, a bucket, the whole service (`live`)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from packager.s3server import EmbeddedS3
from tests.support.ports import free_port_block

if TYPE_CHECKING:  # the API is imported by the tests that use it, not by every test
    from tests.support.service import Live

pytest_plugins = ("tests.support.postgres",)  # postgres_server, postgres_url, store_target


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


@pytest.fixture
async def live(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    """The whole service on free ports, one project, a 30 s reconnect window."""
    from tests.support.service import start_live

    async for running in start_live(tmp_path, s3_server, s3_client, reconnect_window_seconds=30.0):
        yield running
