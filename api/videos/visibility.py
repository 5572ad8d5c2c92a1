"""Who may read a video's objects: Public ones anonymously (as a live's), Private and
Password Protected ones only through presigned URLs.

Keys: a Public video is at `{live prefix}/videos/{videoPublicId}/`, a Private or
Password Protected one at `{live prefix}/videos/private/{videoPublicId}/`. The embedded
SeaweedFS grants its anonymous identity Read on every bucket (`packager.s3server`: the
live's playlists and segments are fetched by players without credentials); a bucket
policy overrides that for the private keys: one statement per bucket (`Sid`
`OnairPrivateVideos`), denying GetObject to requests without a user (the condition
`Null aws:userid`: anonymous ones), on
`arn:aws:s3:::{bucket}/*/videos/private/????????-????-????-????-????????????/*`.
Signed requests, presigned URLs included, are not anonymous and still read them. The
statement is the same for every video of the bucket, so any number of cuts, on any
host, may write it at once; the bucket's other statements are kept. The policy is in
place before the first object of a private video is written.

A live job whose own prefix ended in `videos/private/<a UUID>` would have its live's
objects refused anonymously too: the pattern's UUID shape makes that a name nobody
chooses. This is the AWS policy language: on AWS S3 the same statement does the same.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from packager.object_store import S3Storage, StorageError

logger = logging.getLogger(__name__)

PUBLIC, PRIVATE, PASSWORD_PROTECTED = 1, 2, 3
VISIBILITY_NAMES = {PUBLIC: "Public", PRIVATE: "Private", PASSWORD_PROTECTED: "Password Protected"}
POLICY_SID = "OnairPrivateVideos"
PRIVATE_FOLDER = "private"
_UUID_PATTERN = "????????-????-????-????-????????????"


def is_private(visibility: int) -> bool:
    """Private and Password Protected: not readable without a presigned URL."""
    return visibility != PUBLIC


def video_prefix(live_prefix: str, public_id: str, visibility: int) -> str:
    """Where a video's objects go, under its live's prefix."""
    folder = f"videos/{PRIVATE_FOLDER}" if is_private(visibility) else "videos"
    return f"{live_prefix}/{folder}/{public_id}"


def private_statement(bucket: str) -> dict[str, Any]:
    """The statement that keeps anonymous readers off the bucket's private videos."""
    return {
        "Sid": POLICY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*/videos/{PRIVATE_FOLDER}/{_UUID_PATTERN}/*",
        "Condition": {"Null": {"aws:userid": "true"}},
    }


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy.get("Statement", [])
    return [found] if isinstance(found, dict) else list(found)


def _same(statement: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a stored statement is ours (storage may respell lists and conditions)."""
    resource = statement.get("Resource")
    resources = [resource] if isinstance(resource, str) else list(resource or [])
    return (
        statement.get("Sid") == POLICY_SID
        and statement.get("Effect") == "Deny"
        and wanted["Resource"] in resources
    )


def ensure_private_policy(storage: S3Storage, bucket: str) -> bool:
    """Put the private videos' statement in the bucket's policy unless it is there
    (blocking); True if it was written. Raises `StorageError`."""
    client = storage.client
    wanted = private_statement(bucket)
    try:
        current = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("NoSuchBucketPolicy", "404"):
            raise StorageError(f"get policy of bucket {bucket}: {error}") from error
        current = {"Version": "2012-10-17", "Statement": []}
    except (BotoCoreError, ValueError) as error:
        raise StorageError(f"get policy of bucket {bucket}: {error}") from error
    statements = _statements(current)
    if any(_same(statement, wanted) for statement in statements):
        return False
    others = [s for s in statements if s.get("Sid") != POLICY_SID]
    policy = {"Version": current.get("Version", "2012-10-17"), "Statement": [*others, wanted]}
    try:
        client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"put policy of bucket {bucket}: {error}") from error
    logger.info("bucket %s: private videos refused to anonymous readers (policy)", bucket)
    return True
