"""Storage belongs to its project: the check a pipeline's upload worker runs before its
first write (the bucket is one onair may write, the prefix the job's own).

Which project a bucket belongs to, and that no two jobs share a prefix, is decided
when a job is created (`Database.insert_job`); this is what only the storage itself
can tell: whether onair created the bucket, and whether objects it did not write are
at the prefix already.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

from packager.layout import object_prefix
from packager.object_store import PermanentStorageError, S3Storage

from .records import JobRecords


class StorageOwnership:
    """`prepare(job)`, called on upload workers' threads (any number at once)."""

    def __init__(
        self, records: JobRecords, object_store: S3Storage, allowed_buckets: tuple[str, ...] | None
    ) -> None:
        self._records = records
        self._object_store = object_store
        self._allowed = allowed_buckets  # ONAIR_S3_BUCKETS; None: the buckets onair created
        self._bucket_locks: dict[str, threading.Lock] = {}
        self._bucket_locks_lock = threading.Lock()

    def _bucket_lock(self, bucket: str) -> threading.Lock:
        with self._bucket_locks_lock:
            return self._bucket_locks.setdefault(bucket, threading.Lock())

    def prepare(self, job: dict[str, Any]) -> None:
        """Before a pipeline's first write (its upload worker runs this, retrying
        through an outage): the bucket is one onair may write, the prefix the job's.

        - With `ONAIR_S3_BUCKETS`, no other bucket is created or written.
        - Without it, only buckets onair created itself: one found already there is
          refused (list it in ONAIR_S3_BUCKETS to use it). The store is marked before
          the bucket is created, so hosts sharing it agree on which buckets are onair's.
        - Objects at the prefix of a job that never wrote there are not onair's:
          they are neither continued nor overwritten; the pipeline fails and says so.
        Refusals are `PermanentStorageError`s: the output fails at once, with a timing.
        """
        bucket = job["bucket"]
        records = self._records
        allowed = self._allowed
        if allowed is not None and bucket not in allowed:
            raise PermanentStorageError(f"bucket {bucket} is not in ONAIR_S3_BUCKETS")
        with self._bucket_lock(bucket):  # another job's worker may be creating it
            # Marked before it is made: another host finding the bucket an instant
            # after this one made it finds the mark too.
            created = self._object_store.ensure_bucket(
                bucket, before_create=partial(records.mark_bucket_created, bucket)
            )
        if not created and allowed is None and not records.bucket_created_by_onair(bucket):
            raise PermanentStorageError(
                f"bucket {bucket} was already in the S3 and onair did not create it:"
                " list it in ONAIR_S3_BUCKETS to use it"
            )
        job_id = int(job["id"])
        if not records.prefix_claimed(job_id):
            prefix = object_prefix(job["destination"], job["file_path"])
            if self._object_store.has_objects(bucket, prefix + "/"):
                raise PermanentStorageError(
                    f"s3://{bucket}/{prefix}/ already holds objects onair did not write:"
                    " they are left as they are; empty it or give the job another filePath"
                )
            records.claim_prefix(job_id)
