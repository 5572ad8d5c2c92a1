"""The object store (S3) for published HLS objects: a thin, thread-safe wrapper over boto3.

Timeouts are short and botocore's own retries few: the HLS writer has its own retry
loop with backoff that rides out an outage, so a failing call should fail fast and
tell it, not hang a worker for minutes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import boto3.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_CONTENT_TYPE = "video/mp2t"

# Live playlists change every segment. One second keeps a CDN or browser from serving
# a playlist more than about half a target duration old (RFC 8216 6.2.2 asks players to
# reload at least every target duration), while still absorbing a burst of viewers.
LIVE_PLAYLIST_CACHE_CONTROL = "max-age=1"
# After EXT-X-ENDLIST a playlist no longer changes; an hour, not a year, so that a
# mistaken re-publish under the same path is not pinned in caches for long.
ENDED_PLAYLIST_CACHE_CONTROL = "max-age=3600"
# A segment key is never rewritten with other content during a live.
SEGMENT_CACHE_CONTROL = "max-age=31536000, immutable"

_NOT_FOUND = {"404", "NoSuchBucket", "NotFound"}
_FORBIDDEN = {"403", "AccessDenied", "Forbidden"}
_ALREADY_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
# Refusals that no retry can turn into a success.
PERMANENT_ERROR_CODES = frozenset(
    {
        "KeyTooLongError",
        "InvalidBucketName",
        "AccessDenied",
        "NoSuchBucket",  # the bucket was ensured first: it cannot be created
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "EntityTooLarge",
        "InvalidObjectName",
    }
)


class StorageError(Exception):
    """A storage call failed: unreachable, timed out, or refused. `str()` is the reason."""


class PermanentStorageError(StorageError):
    """A refusal that retrying cannot fix (a key too long, access denied, no bucket)."""


class ObjectStore(Protocol):
    """What the HLS writer needs from storage (`S3Storage`, or a test double)."""

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, cache_control: str
    ) -> None:
        """Store one object, replacing it; raise `StorageError` on failure."""

    def get_text(self, bucket: str, key: str) -> str | None:
        """An object's content as UTF-8 text; None if there is no such object (or
        bucket); raise `StorageError` on failure."""


def content_type_for(key: str) -> str:
    """The Content-Type an HLS object is served with, from its name."""
    if key.endswith(".m3u8"):
        return PLAYLIST_CONTENT_TYPE
    if key.endswith(".ts"):
        return SEGMENT_CONTENT_TYPE
    return "application/octet-stream"


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _describe(action: str, target: str, error: Exception) -> str:
    return f"{action} {target}: {error}"


def _failure(action: str, target: str, error: BotoCoreError | ClientError) -> StorageError:
    """The StorageError for a failed call: permanent when the code says so."""
    message = _describe(action, target, error)
    if isinstance(error, ClientError) and _error_code(error) in PERMANENT_ERROR_CODES:
        return PermanentStorageError(message)
    return StorageError(message)


class S3Storage:
    """Puts objects into an S3-compatible bucket.

    One boto3 client, made from a private session, is shared by every thread (boto3
    clients are thread-safe; the default session is not). `endpoint_url=None` means AWS;
    any other endpoint (SeaweedFS, MinIO) is addressed path-style. Credentials left
    None come from boto3's usual chain (environment, profile, instance role).
    """

    def __init__(
        self,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str,
        *,
        connect_timeout_seconds: float = 2.0,
        read_timeout_seconds: float = 10.0,
        max_attempts: int = 2,
        max_connections: int = 16,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        config = Config(
            connect_timeout=connect_timeout_seconds,
            read_timeout=read_timeout_seconds,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_connections,
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # What botocore signs requests with anyway; said so that presigned URLs
            # (`presign`) are SigV4 too, not the legacy SigV2 some regions refuse.
            signature_version="s3v4",
            # Not every S3-compatible server accepts the CRC trailers boto3 adds by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)

    @property
    def client(self) -> S3Client:
        """The underlying boto3 client (thread-safe), for callers that need more than put."""
        return self._client

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, cache_control: str
    ) -> None:
        """Store one object; raises `StorageError`."""
        try:
            self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=cache_control,
            )
        except (BotoCoreError, ClientError) as error:
            raise _failure("put", f"s3://{bucket}/{key}", error) from error

    def get_text(self, bucket: str, key: str) -> str | None:
        """An object as text (a playlist); None if it does not exist; raises `StorageError`."""
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
            body = response["Body"].read()
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND | {"NoSuchKey"}:
                return None
            raise _failure("get", f"s3://{bucket}/{key}", error) from error
        except BotoCoreError as error:
            raise StorageError(_describe("get", f"s3://{bucket}/{key}", error)) from error
        try:
            return body.decode()
        except UnicodeDecodeError as error:
            raise StorageError(f"get s3://{bucket}/{key}: not UTF-8 text") from error

    def get_bytes(self, bucket: str, key: str) -> bytes | None:
        """An object's bytes (a segment); None if it does not exist; raises `StorageError`."""
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
            return bytes(response["Body"].read())
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND | {"NoSuchKey"}:
                return None
            raise _failure("get", f"s3://{bucket}/{key}", error) from error
        except BotoCoreError as error:
            raise StorageError(_describe("get", f"s3://{bucket}/{key}", error)) from error

    def copy(
        self, bucket: str, source_key: str, key: str, content_type: str, cache_control: str
    ) -> None:
        """Copy an object within `bucket` server-side (CopyObject: no bytes through this
        host), with new headers; raises `StorageError`."""
        try:
            self._client.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": source_key},
                MetadataDirective="REPLACE",
                ContentType=content_type,
                CacheControl=cache_control,
            )
        except (BotoCoreError, ClientError) as error:
            raise _failure("copy", f"s3://{bucket}/{source_key} to {key}", error) from error

    def put_file(
        self, bucket: str, key: str, path: str, content_type: str, cache_control: str
    ) -> None:
        """Store a local file (multipart when large, as boto3's transfer manager does);
        raises `StorageError`."""
        try:
            self._client.upload_file(
                path,
                bucket,
                key,
                ExtraArgs={"ContentType": content_type, "CacheControl": cache_control},
                Config=TransferConfig(max_concurrency=4),  # within the client's pool
            )
        except (BotoCoreError, ClientError) as error:
            raise _failure("put", f"s3://{bucket}/{key}", error) from error
        except Exception as error:  # boto3's S3UploadFailedError wraps the ClientError
            raise StorageError(_describe("put", f"s3://{bucket}/{key}", error)) from error

    def ensure_bucket(self, bucket: str) -> bool:
        """Create `bucket` if it is missing; True if this call created it.

        An existing bucket, or credentials allowed to write objects but not to inspect
        or create buckets, are fine: the first put will tell if writing fails.
        Raises `StorageError` when the storage cannot be reached, `PermanentStorageError`
        when it refuses the bucket for good (an invalid name).
        """
        try:
            self._client.head_bucket(Bucket=bucket)
            return False
        except ClientError as error:
            code = _error_code(error)
            if code in _FORBIDDEN:
                logger.info("bucket %s: no permission to inspect it; assuming it exists", bucket)
                return False
            if code not in _NOT_FOUND:
                raise _failure("head bucket", bucket, error) from error
        except BotoCoreError as error:
            raise _failure("head bucket", bucket, error) from error
        return self._create_bucket(bucket)

    def _create_bucket(self, bucket: str) -> bool:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region and self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
            logger.info("created bucket %s", bucket)
            return True
        except ClientError as error:
            code = _error_code(error)
            if code in _ALREADY_EXISTS:
                logger.info("bucket %s already exists (%s)", bucket, code)
            elif code in _FORBIDDEN:
                logger.warning("bucket %s: no permission to create it; continuing", bucket)
            else:
                raise _failure("create bucket", bucket, error) from error
        except BotoCoreError as error:
            raise _failure("create bucket", bucket, error) from error
        return False

    def has_objects(self, bucket: str, prefix: str) -> bool:
        """Whether any object's key starts with `prefix`; raises `StorageError`."""
        try:
            listing = self._client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except (BotoCoreError, ClientError) as error:
            raise _failure("list", f"s3://{bucket}/{prefix}", error) from error
        return int(listing.get("KeyCount", 0)) > 0

    def ping(self, bucket: str | None = None) -> bool:
        """Whether the storage answers: HEAD of `bucket` when given, else ListBuckets.

        Pass the bucket with credentials scoped to it (ListBuckets may be refused).
        Never raises; bounded by the short timeouts.
        """
        try:
            if bucket is None:
                self._client.list_buckets()
            else:
                self._client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as error:
            logger.debug("storage ping failed: %s", error)
            return False
        return True

    def presign(self, bucket: str, key: str, expires_seconds: int) -> str:
        """A GET URL of the object that works without credentials for `expires_seconds`
        (SigV4 query signing: no request to the storage is made). The URL's host is this
        client's endpoint: make the client on the address players reach."""
        try:
            return self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=expires_seconds,
            )
        except (BotoCoreError, ClientError) as error:
            raise _failure("presign", f"s3://{bucket}/{key}", error) from error
