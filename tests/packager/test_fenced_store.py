"""`FencedStore`: a job's writes only while this host holds the job's lease, and who
wrote each object on the object itself (a real SeaweedFS for the metadata)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from packager.object_store import FencedOut, FencedStore, StorageError
from packager.s3server import EmbeddedS3
from tests.support.fakes import MemoryStore


class Lease:
    def __init__(self) -> None:
        self.ours = True
        self.asked = 0

    def holds(self) -> bool:
        self.asked += 1
        return self.ours


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fenced(inner: Any, lease: Lease, clock: Clock, told: list[str]) -> FencedStore:
    return FencedStore(
        inner,
        lease.holds,
        metadata={"onair-encoder": "1"},
        on_fenced=lambda: told.append("fenced"),
        recheck_seconds=1.0,
        monotonic=clock,
    )


def test_writes_go_through_while_the_lease_holds_and_stop_for_good_once_it_is_lost() -> None:
    inner, lease, clock, told = MemoryStore(), Lease(), Clock(), []
    store = fenced(inner, lease, clock, told)
    store.put("b", "one.ts", b"1", "video/mp2t", "max-age=60")
    store.put("b", "two.ts", b"2", "video/mp2t", "max-age=60")
    assert lease.asked == 1  # trusted for a second of monotonic time
    lease.ours = False  # another host took the job over
    store.put("b", "three.ts", b"3", "video/mp2t", "max-age=60")  # within the second
    clock.now += 30  # the host was frozen for 30 s: it asks again before writing
    with pytest.raises(FencedOut):
        store.put("b", "index.m3u8", b"#EXTM3U", "application/vnd.apple.mpegurl", "no-cache")
    assert told == ["fenced"]
    lease.ours = True  # never again, whatever the store says later
    with pytest.raises(FencedOut):
        store.put("b", "four.ts", b"4", "video/mp2t", "max-age=60")
    assert inner.keys() == {"one.ts", "two.ts", "three.ts"} and told == ["fenced"]
    assert store.get_text("b", "one.ts") == "1"  # reads are not fenced


def test_fence_refuses_at_once_and_an_unreadable_lease_is_an_outage_not_a_refusal() -> None:
    inner, lease, clock, told = MemoryStore(), Lease(), Clock(), []
    store = fenced(inner, lease, clock, told)
    store.put("b", "one.ts", b"1", "video/mp2t", "max-age=60")
    store.fence()  # the heartbeat found the lease lost: nothing more, trusted or not
    with pytest.raises(FencedOut):
        store.put("b", "two.ts", b"2", "video/mp2t", "max-age=60")

    def unreachable() -> bool:
        raise OSError("connection refused")

    other = FencedStore(inner, unreachable, metadata={})
    with pytest.raises(StorageError) as caught:  # retried, like a storage outage
        other.put("b", "three.ts", b"3", "video/mp2t", "max-age=60")
    assert not isinstance(caught.value, FencedOut) and not other.fenced


def test_each_object_says_which_host_and_lease_wrote_it(
    s3_server: EmbeddedS3, s3_client: Any
) -> None:
    from packager.object_store import S3Storage

    bucket = "fenced-" + secrets.token_hex(4)
    s3_client.create_bucket(Bucket=bucket)
    inner = S3Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")
    store = FencedStore(
        inner, lambda: True, metadata={"onair-encoder": "3", "onair-lease-token": "7"}
    )
    store.put(
        bucket, "live/x/index.m3u8", b"#EXTM3U\n", "application/vnd.apple.mpegurl", "no-cache"
    )
    head = s3_client.head_object(Bucket=bucket, Key="live/x/index.m3u8")
    assert head["Metadata"] == {"onair-encoder": "3", "onair-lease-token": "7"}


def test_the_storage_fences_the_instant_between_the_check_and_the_write(
    s3_server: EmbeddedS3, s3_client: Any
) -> None:
    """Conditional writes on the real SeaweedFS: a host whose check passed just before
    another took the job over (both stores still believe their lease holds) cannot
    replace what the newer lease wrote; the newer one replaces what the older wrote."""
    from packager.object_store import S3Storage

    bucket = "conditional-" + secrets.token_hex(4)
    s3_client.create_bucket(Bucket=bucket)

    def host(encoder: str, token: str, told: list[str]) -> FencedStore:
        inner = S3Storage(
            s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1"
        )
        return FencedStore(
            inner,
            lambda: True,  # the race: both passed their check
            metadata={"onair-encoder": encoder, "onair-lease-token": token},
            on_fenced=lambda: told.append(encoder),
        )

    def body(key: str) -> bytes:
        return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())

    told: list[str] = []
    old, new = host("1", "5", told), host("2", "6", told)
    playlist, segment = "live/x/index.m3u8", "live/x/seg_000007.ts"
    old.put(bucket, playlist, b"#EXTM3U\n#old\n", "application/vnd.apple.mpegurl", "no-cache")
    old.put(bucket, segment, b"old segment", "video/mp2t", "max-age=60")  # not yet new's
    # The new holder's first writes find the older lease's objects and replace them.
    new.put(bucket, playlist, b"#EXTM3U\n#new\n", "application/vnd.apple.mpegurl", "no-cache")
    new.put(bucket, segment, b"new segment", "video/mp2t", "max-age=60")
    assert body(playlist) == b"#EXTM3U\n#new\n" and body(segment) == b"new segment"
    # The old host's next write of either: refused by the storage, and it is fenced.
    with pytest.raises(FencedOut):
        old.put(bucket, playlist, b"#EXTM3U\n#late\n", "application/vnd.apple.mpegurl", "")
    assert told == ["1"] and old.fenced
    with pytest.raises(FencedOut):
        old.put(bucket, "live/x/seg_000008.ts", b"late", "video/mp2t", "max-age=60")
    assert body(playlist) == b"#EXTM3U\n#new\n" and body(segment) == b"new segment"
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="live/x/")["Contents"]
    assert {o["Key"] for o in listed} == {playlist, segment}
    # Its own write again (a retry whose answer was lost, or the ETag forgotten): fine.
    again = host("2", "6", told)
    again.put(bucket, playlist, b"#EXTM3U\n#again\n", "application/vnd.apple.mpegurl", "")
    assert body(playlist) == b"#EXTM3U\n#again\n" and told == ["1"]


def test_a_storage_refusing_conditions_is_written_without_them() -> None:
    from packager.object_store import ConditionsUnsupported, S3Storage

    class Plain(S3Storage):
        def __init__(self) -> None:
            self.writes: list[tuple[str, str | None, bool]] = []

        def put(
            self,
            bucket,
            key,
            data,
            content_type,
            cache_control,
            metadata=None,
            *,
            if_match=None,
            if_none_match=False,
        ):  # type: ignore[no-untyped-def]
            if if_match is not None or if_none_match:
                raise ConditionsUnsupported("501 NotImplemented")
            self.writes.append((key, if_match, if_none_match))
            return '"etag"'

    inner = Plain()
    store = FencedStore(inner, lambda: True, metadata={"onair-lease-token": "3"})
    store.put("b", "one.ts", b"1", "video/mp2t", "max-age=60")
    store.put("b", "two.ts", b"2", "video/mp2t", "max-age=60")
    assert inner.writes == [("one.ts", None, False), ("two.ts", None, False)]
