"""The object store (S3) for published HLS objects: a thin, thread-safe wrapper over boto3.

Timeouts are short and botocore's own retries few: the HLS writer has its own retry
loop with backoff that rides out an outage, so a failing call should fail fast and
tell it, not hang a worker for minutes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
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
_PRECONDITION_FAILED = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_NOT_IMPLEMENTED = {"501", "NotImplemented"}
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
    ) -> object:
        """Store one object, replacing it; raise `StorageError` on failure (what it
        returns is not used)."""

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


TOKEN_METADATA = "onair-lease-token"  # the writer's fencing token, on every object
ETAG_MEMORY = 1024
CONDITIONAL_ATTEMPTS = 3


class FencedOut(PermanentStorageError):
    """This host no longer holds the job's lease: another host writes its objects."""


class PreconditionFailed(StorageError):
    """A conditional write's condition did not hold (412): the object is not the one
    the writer last saw."""


class ConditionsUnsupported(StorageError):
    """The server refuses conditional writes (501): they are not used with it."""


class FencedStore:
    """One job's storage while this host holds the job's lease (an `ObjectStore`).

    Every write asks `holds()` first (the shared store's answer: is the lease still this
    one), trusted for `recheck_seconds` of monotonic time, so a host that was stopped for
    a while asks again before its first write. Once the lease is lost every write is
    refused (`FencedOut`, a permanent refusal: nothing of this host's is written after
    another host took the job over) and `on_fenced` is told, once. Each object written
    carries who wrote it: `metadata` (the encoder id and the lease's fencing token).

    The instant between that check and the request is closed by the storage itself,
    where it takes conditional writes (SeaweedFS, AWS S3, MinIO): each object is
    written `If-Match` the ETag this store last wrote or saw for it, or `If-None-Match:
    *` where it knows of none. When the condition fails (412), the object's metadata
    says who wrote it: a later lease (a higher fencing token) means this host was
    overtaken, and it is fenced there and then; an earlier lease's object (the host
    this one took over from, or an older version of onair) or its own (a retry of a
    write whose answer was lost) is replaced, `If-Match` its current ETag. A server
    that refuses conditions (501) is written to without them (the store's check
    alone, as for an `ObjectStore` other than S3).
    """

    def __init__(
        self,
        inner: ObjectStore,
        holds: Callable[[], bool],
        *,
        metadata: Mapping[str, str],
        on_fenced: Callable[[], None] | None = None,
        recheck_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._holds = holds
        self._metadata = dict(metadata)
        self._on_fenced = on_fenced
        self._recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._trusted_until = float("-inf")
        self.fenced = False
        token = self._metadata.get(TOKEN_METADATA)
        self._token = int(token) if token is not None else None
        # The ETag each object was last seen with (the most recent ETAG_MEMORY keys:
        # one forgotten costs a 412 and a HEAD, not a wrong write).
        self._etags: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        self._conditional = isinstance(inner, S3Storage) and self._token is not None

    def fence(self) -> None:
        """The lease is lost (the heartbeat found it so): refuse every write from now."""
        with self._lock:
            self.fenced = True

    def _check(self) -> None:
        with self._lock:
            if self.fenced:
                raise FencedOut("this host no longer holds the job's lease")
            now = self._monotonic()
            if now < self._trusted_until:
                return
            try:
                holds = self._holds()
            except Exception as error:  # the store unreachable: not a refusal, retried
                raise StorageError(f"cannot read the job's lease: {error}") from error
            if holds:
                self._trusted_until = now + self._recheck_seconds
                return
            self.fenced = True
        logger.warning("the job's lease is another host's now: nothing more is written")
        if self._on_fenced is not None:
            self._on_fenced()
        raise FencedOut("this host no longer holds the job's lease")

    def _fenced_by(self, writer: Mapping[str, str]) -> bool:
        """Whether an object's writer (its metadata) held a later lease than ours."""
        try:
            theirs = int(writer.get(TOKEN_METADATA, "0"))
        except ValueError:
            theirs = 0
        return self._token is not None and theirs > self._token

    def _overtaken(self, bucket: str, key: str, writer: Mapping[str, str]) -> FencedOut:
        with self._lock:
            already, self.fenced = self.fenced, True
        logger.warning(
            "s3://%s/%s was written under a later lease (encoder %s): nothing more is written",
            bucket,
            key,
            writer.get("onair-encoder", "?"),
        )
        if not already and self._on_fenced is not None:
            self._on_fenced()
        return FencedOut("another host writes the job's objects under a later lease")

    def _seen(self, place: tuple[str, str], etag: str | None) -> None:
        with self._lock:
            if etag is None:
                self._etags.pop(place, None)
                return
            self._etags[place] = etag
            self._etags.move_to_end(place)
            while len(self._etags) > ETAG_MEMORY:
                self._etags.popitem(last=False)

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, cache_control: str
    ) -> None:
        self._check()
        inner = self._inner
        if not isinstance(inner, S3Storage):
            inner.put(bucket, key, data, content_type, cache_control)
            return
        if not self._conditional:  # who wrote it, on the object, all the same
            inner.put(bucket, key, data, content_type, cache_control, self._metadata)
            return
        place = (bucket, key)
        for _ in range(CONDITIONAL_ATTEMPTS):
            with self._lock:
                known = self._etags.get(place)
            try:
                etag = inner.put(
                    bucket,
                    key,
                    data,
                    content_type,
                    cache_control,
                    self._metadata,
                    if_match=known,
                    if_none_match=known is None,
                )
            except PreconditionFailed:
                current = inner.head(bucket, key)
                if current is not None and self._fenced_by(current[1]):
                    raise self._overtaken(bucket, key, current[1]) from None
                self._seen(place, current[0] if current is not None else None)
                continue
            except ConditionsUnsupported:
                logger.warning("the storage refuses conditional writes: writing without them")
                self._conditional = False
                inner.put(bucket, key, data, content_type, cache_control, self._metadata)
                return
            self._seen(place, etag)
            return
        raise StorageError(f"put s3://{bucket}/{key}: the object kept changing under the write")

    def get_text(self, bucket: str, key: str) -> str | None:
        return self._inner.get_text(bucket, key)


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
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str,
        metadata: Mapping[str, str] | None = None,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str | None:
        """Store one object (with user `metadata`: `x-amz-meta-*`); returns its ETag.

        A conditional write: `if_match` (only over the object of that ETag), or
        `if_none_match` (only where there is no object yet): `PreconditionFailed` when
        the condition does not hold, `ConditionsUnsupported` from a server that refuses
        conditions. Raises `StorageError` otherwise."""
        conditions: dict[str, str] = {}
        if if_match is not None:
            conditions["IfMatch"] = if_match
        elif if_none_match:
            conditions["IfNoneMatch"] = "*"
        target = f"s3://{bucket}/{key}"
        try:
            response = self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=cache_control,
                Metadata=dict(metadata or {}),
                **conditions,  # type: ignore[arg-type]
            )
        except ClientError as error:
            code = _error_code(error)
            if conditions and code in _PRECONDITION_FAILED:
                raise PreconditionFailed(_describe("put", target, error)) from error
            if conditions and code in _NOT_IMPLEMENTED:
                raise ConditionsUnsupported(_describe("put", target, error)) from error
            raise _failure("put", target, error) from error
        except BotoCoreError as error:
            raise _failure("put", target, error) from error
        etag = response.get("ETag")
        return str(etag) if etag else None

    def head(self, bucket: str, key: str) -> tuple[str, dict[str, str]] | None:
        """An object's ETag and user metadata; None if there is no such object; raises
        `StorageError`."""
        try:
            response = self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND | {"NoSuchKey"}:
                return None
            raise _failure("head", f"s3://{bucket}/{key}", error) from error
        except BotoCoreError as error:
            raise _failure("head", f"s3://{bucket}/{key}", error) from error
        return str(response.get("ETag", "")), dict(response.get("Metadata", {}))

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

    def ensure_bucket(self, bucket: str, before_create: Callable[[], None] | None = None) -> bool:
        """Create `bucket` if it is missing; True if this call created it.

        `before_create` runs once the bucket is known to be missing, before it is
        created: a caller that must tell its own buckets from others' records the claim
        there, so that a second writer finding the bucket already made (by the first,
        an instant later) finds the claim too.

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
        if before_create is not None:
            before_create()
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
