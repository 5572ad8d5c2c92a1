"""No tenant touches another's media: buckets belong to a project, no two jobs share a place.

A bucket is owned by the project whose job first used it; no two jobs (of any project)
have equal or nested output prefixes in one bucket; with ONAIR_S3_BUCKETS only those
buckets are accepted; every key onair writes fits in S3's 1024 bytes; bucket names
follow the S3 naming rules in full.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.database import Database, head_revision, utcnow
from api.errors import ValidationFailed
from api.ownership import StorageOwnership
from api.records import JobRecords
from api.settings import DOCUMENTED, ConfigError, load_settings
from packager.object_store import PermanentStorageError, S3Storage
from packager.s3server import EmbeddedS3
from tests.support.legacy_store import create_legacy_store, job_row, legacy_job, legacy_project
from tests.support.service import (
    CREATE_BODY,
    Api,
    Project,
    make_projects,
    make_settings,
    running_api,
    start_api,
)

pytestmark = pytest.mark.slow  # the whole service, many projects

OWNED = "bucket: owned by another project"
# S3 keys are at most 1024 bytes; onair keeps 128 for what it appends to the prefix.
MAX_PREFIX_BYTES = 1024 - 128


def place(destination: str, file_path: str, bucket: str = "onair-test") -> dict[str, Any]:
    return {
        **CREATE_BODY,
        "bucket": bucket,
        "destination": destination,
        "input": {**CREATE_BODY["input"], "filePath": file_path},
    }


async def create(api: Api, body: dict[str, Any], project: Project | None = None) -> Any:
    return await api.call("POST", "/livejobs", project, json=body)


def _fields(body: dict[str, Any]) -> list[str]:
    return [e.split(":")[0] for e in body["errors"]]


# -- buckets belong to a project ------------------------------------------------------


async def test_another_project_is_refused_on_a_bucket_it_does_not_own(api: Api) -> None:
    status, first = await create(api, place("shows", "news", "tenant-a-media"))
    assert status == 201, first
    # The probe: B on A's bucket, A's very destination and filePath, to append to A's live.
    for body in (
        place("shows", "news", "tenant-a-media"),
        place("elsewhere", "entirely", "tenant-a-media"),
    ):
        status, answer = await create(api, body, api.other)
        assert status == 400, answer
        assert answer["errors"] == [OWNED]  # only that: nothing about the prefixes in it
        assert api.project.id not in str(answer)  # never says whose it is
    _, listed = await api.call("GET", "/livejobs", api.other)
    assert listed["result"] == []
    # The owner goes on using it; B has buckets of its own.
    status, _ = await create(api, place("shows", "sports", "tenant-a-media"))
    assert status == 201
    status, _ = await create(api, place("shows", "news", "tenant-b-media"), api.other)
    assert status == 201
    database: Database = Database(api.settings.db_path)
    try:
        owner = database.bucket("tenant-a-media")
        assert owner is not None and owner["project_id"] == api.project.id
        assert owner["created_by_onair"] is False
        assert database.bucket("tenant-b-media")["project_id"] == api.other.id  # type: ignore[index]
        assert database.bucket("never-used") is None
    finally:
        database.close()


async def test_the_database_marks_the_buckets_onair_created(api: Api) -> None:
    await api.create_job(bucket="made-by-onair")
    database = Database(api.settings.db_path)
    try:
        assert database.mark_bucket_created("made-by-onair") is True
        claim = database.bucket("made-by-onair")
        assert claim is not None and claim["created_by_onair"] is True
        assert claim["project_id"] == api.project.id and claim["created_at"]
        assert database.mark_bucket_created("unclaimed-bucket") is False
        assert database.bucket("unclaimed-bucket") is None
    finally:
        database.close()


# -- no two jobs share a place ------------------------------------------------------------

EXISTING = ("a", "b/c")  # prefix a/b/c


@pytest.mark.parametrize(
    ("destination", "file_path"),
    [
        ("a", "b/c"),  # the same place
        ("a/b", "c"),  # the same place, split otherwise
        ("a/", "b/c/"),  # the same place, with slashes
        ("a/b/c", "d"),  # inside it
        ("a", "b/c/d/e"),  # deeper inside it
        ("a", "b"),  # enclosing it
        ("a/b", "c/720p"),  # inside it: where its renditions' segments go
    ],
)
async def test_an_overlapping_prefix_is_refused_to_every_project(
    api: Api, destination: str, file_path: str
) -> None:
    status, _ = await create(api, place(*EXISTING))
    assert status == 201
    status, body = await create(api, place(destination, file_path))
    assert status == 400, body
    assert _fields(body) == ["input.filePath"]
    assert "overlaps" in body["errors"][0]
    status, body = await create(api, place(destination, file_path), api.other)
    assert status == 400 and body["errors"] == [OWNED]
    _, listed = await api.call("GET", "/livejobs")
    assert listed["resultInfo"]["totalCount"] == 1


@pytest.mark.parametrize(
    ("destination", "file_path"),
    [
        ("a", "bc"),  # a/bc: a sibling of a/b, not inside it
        ("a/b", "cd"),  # a/b/cd next to a/b/c
        ("a", "b/c2"),
        ("ab", "c"),
        ("A", "b/c"),  # keys are case-sensitive
    ],
)
async def test_a_sibling_prefix_is_allowed(api: Api, destination: str, file_path: str) -> None:
    status, _ = await create(api, place(*EXISTING))
    assert status == 201
    status, body = await create(api, place(destination, file_path))
    assert status == 201, body


async def test_the_same_place_in_another_bucket_is_another_place(api: Api) -> None:
    assert (await create(api, place(*EXISTING, bucket="first-bucket")))[0] == 201
    assert (await create(api, place(*EXISTING, bucket="second-bucket")))[0] == 201
    assert (await create(api, place(*EXISTING, bucket="third-bucket"), api.other))[0] == 201


# -- concurrent creates ---------------------------------------------------------------------


async def test_two_projects_racing_for_a_new_bucket_one_wins(api: Api) -> None:
    for round_number in range(5):
        bucket = f"contested-{round_number}"
        results = await asyncio.gather(
            create(api, place("shows", "a", bucket), api.project),
            create(api, place("shows", "b", bucket), api.other),
        )
        assert sorted(status for status, _ in results) == [201, 400], results
        (won,) = [body for status, body in results if status == 201]
        (refused,) = [body for status, body in results if status == 400]
        assert refused["errors"] == [OWNED]
        database = Database(api.settings.db_path)
        try:
            claim = database.bucket(bucket)
        finally:
            database.close()
        assert claim is not None and claim["project_id"] == won["result"]["projectId"]


async def test_two_creates_racing_for_one_place_one_wins(api: Api) -> None:
    results = await asyncio.gather(*(create(api, place("race", f"x{'/y' * i}")) for i in range(2)))
    assert sorted(status for status, _ in results) == [201, 400], results


def test_two_store_connections_racing_for_a_new_bucket_one_wins(
    store_target: str | Path,
) -> None:
    """What two processes (two onair, or the CLI) or two hosts do: one claim per bucket,
    whatever the interleaving, thanks to the lock taken before the check (SQLite's write
    lock, the bucket row's on PostgreSQL)."""
    db_path = store_target
    projects = make_projects(db_path, 2)  # a PostgreSQL URL opens as well as a path
    databases = [Database(db_path) for _ in projects]
    barrier = threading.Barrier(len(databases))
    outcomes: list[str] = []

    def insert(database: Database, project: Project, index: int) -> None:
        row = {
            "project_id": project.id,
            "name": f"00000000-0000-4000-8000-00000000000{index}",
            "stream_key": f"00000000-0000-4000-8000-0000000000a{index}",
            "key_digest": f"digest-{index}",
            "destination": "race",
            "description": None,
            "bucket": "contested-bucket",
            "cdn_distribution": 0,
            "job_template_id": 2,
            "file_path": f"job{index}",
            "server_type": 0,
            "input_class": 0,
            "callback_url": None,
            "status": 1,
            "online": 0,
            "insert_date": utcnow(),
        }
        barrier.wait()
        try:
            database.insert_job(row, ["720p"])
            outcomes.append(project.id)
        except ValidationFailed as refused:  # BucketOwned: a 400 naming `bucket`
            assert refused.errors == [OWNED]
            outcomes.append("refused")

    try:
        threads = [
            threading.Thread(target=insert, args=(database, project, i))
            for i, (database, project) in enumerate(zip(databases, projects, strict=True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(outcomes) == 2 and outcomes.count("refused") == 1, outcomes
        (winner,) = [o for o in outcomes if o != "refused"]
        claim = databases[0].bucket("contested-bucket")
        assert claim is not None and claim["project_id"] == winner
    finally:
        for database in databases:
            database.close()


async def test_a_bucket_another_host_made_an_instant_ago_is_onairs(
    api: Api, s3_server: EmbeddedS3
) -> None:
    """Two hosts' first writes to a new bucket at once: the one that finds it made (by
    the other, between that one's check and its claim in the store) must not take it for
    a bucket onair did not create."""
    first = await api.create_job(bucket="made-by-a-neighbour", destination="a")
    second = await api.create_job(bucket="made-by-a-neighbour", destination="b")
    stores = [Database(api.settings.db_path) for _ in range(2)]
    try:
        rows = [stores[0].get_job_by_id(first["id"]), stores[1].get_job_by_id(second["id"])]
        endpoint = (s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")
        neighbour = StorageOwnership(JobRecords(stores[1]), S3Storage(*endpoint), None)

        class MadeThenNeighbour(S3Storage):
            """Creates the bucket, then lets the other host's first write run in full."""

            def _create_bucket(self, bucket: str) -> bool:
                created = super()._create_bucket(bucket)
                neighbour.prepare(rows[1])
                return created

        host = StorageOwnership(JobRecords(stores[0]), MadeThenNeighbour(*endpoint), None)
        await asyncio.to_thread(host.prepare, rows[0])
        claim = stores[0].bucket("made-by-a-neighbour")
        assert claim is not None and claim["created_by_onair"] is True
        # A bucket made outside onair is still refused.
        S3Storage(*endpoint).ensure_bucket("made-by-someone-else")
        third = await api.create_job(bucket="made-by-someone-else")
        with pytest.raises(PermanentStorageError, match="onair did not create it"):
            neighbour.prepare(stores[1].get_job_by_id(third["id"]))
    finally:
        for store in stores:
            store.close()


# -- the operator's allow-list ------------------------------------------------------------


async def test_with_onair_s3_buckets_only_those_buckets_are_accepted(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    allowed = ("live-media", "live-archive")
    async with running_api(tmp_path, s3_server, s3_buckets=allowed) as api:
        for bucket in allowed:
            status, body = await create(api, place("shows", "news", bucket))
            assert status == 201, body
        for bucket in ("onair-test", "live-media2", "other-bucket"):
            status, body = await create(api, place("shows", "news", bucket))
            assert status == 400
            assert body["errors"] == ["bucket: not in ONAIR_S3_BUCKETS"]
        # Allowed is not owned: the first project's job took live-media.
        status, body = await create(api, place("other", "show", "live-media"), api.other)
        assert status == 400 and body["errors"] == [OWNED]


def test_onair_s3_buckets_is_read_and_validated() -> None:
    assert load_settings({}).s3_buckets is None
    assert load_settings({"ONAIR_S3_BUCKETS": ""}).s3_buckets is None
    settings = load_settings({"ONAIR_S3_BUCKETS": "live-media, live.archive,live-media"})
    assert settings.s3_buckets == ("live-media", "live.archive")
    for value in ("live-media,Bad_Bucket", "ok-bucket,,other-bucket", "a.-b", "ab"):
        with pytest.raises(ConfigError) as error:
            load_settings({"ONAIR_S3_BUCKETS": value})
        assert "ONAIR_S3_BUCKETS" in str(error.value)
    assert "S3_BUCKETS" in DOCUMENTED


# -- an old data dir migrates in place ------------------------------------------------------


async def test_an_old_data_dir_claims_each_bucket_for_its_earliest_job(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    settings = make_settings(tmp_path, s3_server)
    # The schema and code before buckets had owners (user_version 2): the probe's B could
    # append to A's.
    create_legacy_store(settings.db_path, 2)
    a, b = (Project(name, legacy_project(settings.db_path, name, utcnow())) for name in ("a", "b"))
    old = [
        (a, "shows", "news", "legacy-a"),
        (b, "shows", "news", "legacy-a"),  # the probe: B on A's bucket and place
        (b, "probe", "x/y", "legacy-a"),
        (b, "mine", "only", "legacy-b"),
        (b, "first", "here", "mixed-bucket"),  # B first here, A later
        (a, "second", "here", "mixed-bucket"),
    ]
    for project, destination, file_path, bucket in old:
        row = job_row(project.id, bucket, destination, file_path)
        legacy_job(settings.db_path, row, ["720p", "480p", "360p"])

    server = await start_api(settings)
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:

        async def post(project: Project, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            url = f"{base}/api/v1/projects/{project.id}/livejobs"
            async with session.post(url, json=body, headers=project.headers) as r:
                return r.status, await r.json()

        try:
            database = Database(settings.db_path)
            try:
                assert database.schema_revision == head_revision()
                owners = {n: database.bucket(n) for n in ("legacy-a", "legacy-b", "mixed-bucket")}
            finally:
                database.close()
            assert {n: c["project_id"] for n, c in owners.items() if c} == {
                "legacy-a": a.id,
                "legacy-b": b.id,
                "mixed-bucket": b.id,
            }
            # Trusted as onair's: earlier versions wrote the buckets their jobs used.
            assert all(c["created_by_onair"] for c in owners.values() if c)
            # From now on B cannot add to A's bucket, nor A to B's.
            assert await post(b, place("probe", "z", "legacy-a")) == (400, _refusal(400, OWNED))
            status, body = await post(a, place("x", "y", "mixed-bucket"))
            assert status == 400 and body["errors"] == [OWNED]
            # The old jobs stay, and their places stay theirs, B's legacy one included.
            status, body = await post(a, place("probe", "x/y/z", "legacy-a"))
            assert status == 400 and _fields(body) == ["input.filePath"]
            assert (await post(a, place("shows", "sports", "legacy-a")))[0] == 201
            assert (await post(b, place("mine", "too", "legacy-b")))[0] == 201
            async with session.get(
                f"{base}/api/v1/projects/{b.id}/livejobs", headers=b.headers
            ) as r:
                assert (await r.json())["resultInfo"]["totalCount"] == 5
        finally:
            await server.close()


def _refusal(status: int, error: str) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [error],
        "messages": [],
        "result": None,
        "resultInfo": None,
        "statusCode": status,
    }


# -- every key fits in S3's 1024 bytes ------------------------------------------------------


async def test_a_prefix_that_leaves_no_room_for_onairs_keys_is_refused(api: Api) -> None:
    status, body = await create(api, place("d" * 512, "f" * 512))
    assert status == 400
    assert _fields(body) == ["input.filePath"]
    assert str(MAX_PREFIX_BYTES) in body["errors"][0]
    # Exactly the limit: destination/filePath of MAX_PREFIX_BYTES bytes.
    destination = "d" * 400
    fits = "f" * (MAX_PREFIX_BYTES - len(destination) - 1)
    status, body = await create(api, place(destination, fits))
    assert status == 201, body
    status, body = await create(api, place(destination + "x", fits))
    assert status == 400 and _fields(body) == ["input.filePath"]


async def test_the_prefix_is_counted_in_utf8_bytes(api: Api) -> None:
    # 450 characters either way, but "é" is 2 bytes: 906 bytes with "shows/".
    status, body = await create(api, place("shows", "é" * 450))
    assert status == 400, body
    assert _fields(body) == ["input.filePath"] and "906 bytes" in body["errors"][0]
    status, body = await create(api, place("shows", "e" * 450))
    assert status == 201, body
    # A destination too long on its own is named itself (300 characters, 900 bytes).
    status, body = await create(api, place("€" * 300, "x"))
    assert status == 400 and _fields(body) == ["destination"]


# -- bucket names follow the S3 rules in full ----------------------------------------------


@pytest.mark.parametrize(
    "bucket",
    [
        "abc",
        "a" * 63,
        "my.bucket-1",
        "1bucket",
        "bucket9",
        "a-b.c-d",
        "xn-bucket",  # only `xn--` is reserved
        "bucket-s3",
        "192.168.5",  # three parts: not an IP address
    ],
)
async def test_valid_bucket_names_are_accepted(api: Api, bucket: str) -> None:
    status, body = await create(api, place("shows", "news", bucket))
    assert status == 201, body
    assert body["result"]["bucket"] == bucket


@pytest.mark.parametrize(
    ("bucket", "rule"),
    [
        ("ab", "3 to 63"),
        ("a" * 64, "3 to 63"),
        ("Bucket", "lowercase"),
        ("my_bucket", "lowercase"),
        ("my bucket", "lowercase"),
        ("bucké", "lowercase"),
        ("-bucket", "begin and end"),
        ("bucket-", "begin and end"),
        (".bucket", "begin and end"),
        ("bucket.", "begin and end"),
        ("my..bucket", "'..'"),
        ("a.-b", "'.-'"),
        ("a-.b", "'-.'"),
        ("192.168.5.4", "IP address"),
        ("xn--bucket", "xn--"),
        ("sthree-bucket", "sthree-"),
        ("sthree-configurator", "sthree-"),
        ("amzn-s3-demo-bucket", "amzn-s3-demo-"),
        ("bucket-s3alias", "-s3alias"),
        ("bucket--ol-s3", "--ol-s3"),
        ("bucket.mrap", ".mrap"),
        ("bucket--x-s3", "--x-s3"),
        ("bucket--table-s3", "--table-s3"),
    ],
)
async def test_invalid_bucket_names_are_refused_naming_the_rule(
    api: Api, bucket: str, rule: str
) -> None:
    status, body = await create(api, place("shows", "news", bucket))
    assert status == 400
    assert len(body["errors"]) == 1, body["errors"]
    assert body["errors"][0].startswith("bucket: not a valid S3 bucket name")
    assert rule in body["errors"][0]
