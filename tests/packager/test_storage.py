"""S3Storage against a real SeaweedFS server."""

from __future__ import annotations

import secrets
import time

import pytest

from packager.object_store import (
    PLAYLIST_CONTENT_TYPE,
    SEGMENT_CACHE_CONTROL,
    SEGMENT_CONTENT_TYPE,
    S3Storage,
    StorageError,
    content_type_for,
)
from packager.s3server import EmbeddedS3
from tests.support.ports import free_port


@pytest.fixture
def storage(s3_server: EmbeddedS3) -> S3Storage:
    return S3Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")


def test_put_sets_content_type_and_cache_control(storage, s3_client, bucket) -> None:
    storage.put(
        bucket, "a/seg_000000.ts", b"\x47" * 188, SEGMENT_CONTENT_TYPE, SEGMENT_CACHE_CONTROL
    )
    got = s3_client.get_object(Bucket=bucket, Key="a/seg_000000.ts")
    assert got["Body"].read() == b"\x47" * 188
    assert got["ContentType"] == "video/mp2t"
    assert got["CacheControl"] == "max-age=31536000, immutable"


def test_content_types() -> None:
    assert content_type_for("x/index.m3u8") == PLAYLIST_CONTENT_TYPE
    assert content_type_for("x/seg_000001.ts") == SEGMENT_CONTENT_TYPE
    assert content_type_for("x/other.bin") == "application/octet-stream"


def test_ensure_bucket_creates_then_tolerates_existing(storage, s3_client) -> None:
    name = "ensure-" + secrets.token_hex(4)
    storage.ensure_bucket(name)
    s3_client.head_bucket(Bucket=name)  # raises if missing
    storage.ensure_bucket(name)  # already there: no error
    storage.put(name, "k.m3u8", b"#EXTM3U\n", PLAYLIST_CONTENT_TYPE, "max-age=1")


def test_ping(storage, bucket) -> None:
    assert storage.ping() is True
    assert storage.ping(bucket) is True
    assert storage.ping("no-such-" + secrets.token_hex(4)) is False


def test_unreachable_storage_fails_fast() -> None:
    dead = S3Storage(f"http://127.0.0.1:{free_port()}", "k", "s", "us-east-1")
    started = time.monotonic()
    assert dead.ping() is False
    with pytest.raises(StorageError, match=r"put s3://b/k\.ts"):
        dead.put("b", "k.ts", b"x", SEGMENT_CONTENT_TYPE, SEGMENT_CACHE_CONTROL)
    with pytest.raises(StorageError):
        dead.ensure_bucket("b")
    assert time.monotonic() - started < 10


@pytest.mark.slow  # real time or subprocesses: left out of make test-fast
def test_bad_credentials_raise_storage_error(s3_server: EmbeddedS3, bucket) -> None:
    wrong = S3Storage(s3_server.endpoint, s3_server.access_key, "wrong-secret", "us-east-1")
    with pytest.raises(StorageError):
        wrong.put(bucket, "k.ts", b"x", SEGMENT_CONTENT_TYPE, SEGMENT_CACHE_CONTROL)
