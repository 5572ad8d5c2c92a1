"""The live-video and video endpoints' answers to every bad input (through the running
API, real store, real SeaweedFS), and the private videos' bucket policy on SeaweedFS:
anonymous readers refused, presigned URLs and the live's objects still readable."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from api.videos.visibility import ensure_private_policy, private_statement
from packager.object_store import S3Storage
from packager.s3server import EmbeddedS3
from tests.support.service import Api, Project

DATES = {"dateTimeFrom": "2024-11-13T13:05:31.392Z", "dateTimeTo": "2024-11-13T13:06:31.392Z"}


async def call(
    api: Api, method: str, path: str, project: Project | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    """`path` under `/api/{v1|v2}/{projectId}` (the platform's paths, no `projects/`)."""
    project = project or api.project
    version, rest = path.split("/", 1)
    url = f"{api.base}/api/{version}/{project.id}/{rest}"
    headers = kwargs.pop("headers", project.headers)
    async with api.session.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"fromMilisecond": 1000, **DATES},
            "fromMilisecond, dateTimeFrom, dateTimeTo: give either the milliseconds"
            " (fromMilisecond, toMilisecond) or the date-times (dateTimeFrom, dateTimeTo),"
            " not both",
        ),
        (
            {"fromMilisecond": 3000, "toMilisecond": 3000},
            "toMilisecond: must be greater than fromMilisecond",
        ),
        (
            {"fromMilisecond": 3000, "toMilisecond": 1000},
            "toMilisecond: must be greater than fromMilisecond",
        ),
        (
            {"dateTimeFrom": DATES["dateTimeTo"], "dateTimeTo": DATES["dateTimeFrom"]},
            "dateTimeTo: must be later than dateTimeFrom",
        ),
        (
            {"videoVisibilityOptionId": 4},
            "videoVisibilityOptionId: must be one of 1 (Public), 2 (Private),"
            " 3 (Password Protected)",
        ),
        ({"fromMilisecond": -5}, "fromMilisecond: must be at least 0"),
        ({"toMilisecond": "5000"}, "toMilisecond: must be an integer"),
        ({"dateTimeFrom": "yesterday"}, "dateTimeFrom: must be an ISO 8601 date-time such as"),
    ],
)
async def test_stop_and_cut_refuses_a_bad_body_naming_the_fields(
    api: Api, body: dict[str, Any], error: str
) -> None:
    job = await api.create_job()
    status, answer = await call(
        api, "POST", f"v2/live-videos/{job['name']}/stop-and-cut", json=body
    )
    assert status == 400, answer
    assert answer["errors"][0].startswith(error), answer
    status, detail = await call(api, "GET", f"v1/videos?liveJobId={job['id']}")
    assert (status, detail["result"]) == (200, [])  # nothing was made of it


async def test_the_references_example_body_is_read_as_its_date_times(api: Api) -> None:
    """Every field sent (date-times, `0` milliseconds, visibility `0`), as in the reference:
    the zeros are absent, the date-times are the range (here: not recorded)."""
    job = await api.create_job()
    example = {**DATES, "fromMilisecond": 0, "toMilisecond": 0, "videoVisibilityOptionId": 0}
    status, answer = await call(
        api, "POST", f"v2/live-videos/{job['id']}/stop-and-cut", json=example
    )
    assert status == 400, answer
    assert answer["errors"] == ["id: nothing was recorded: the live has no master playlist"]


async def test_cut_and_publish_refuses_a_bad_body(api: Api) -> None:
    job = await api.create_job()
    path = f"v2/live-videos/{job['name']}/cut-and-publish"
    for body, error in (
        ({"fromMilisecond": 2000, "toMilisecond": 1000}, "toMilisecond: must be greater"),
        ({"videoVisibilityOptionId": 9}, "videoVisibilityOptionId: must be one of"),
        ({"title": "x" * 501}, "title: at most 500 characters"),
        ({"title": "a\u0000b"}, "title: must not contain control characters"),
    ):
        status, answer = await call(api, "POST", path, json=body)
        assert status == 400 and answer["errors"][0].startswith(error), answer


async def test_unknown_and_other_projects_lives_and_videos_are_not_found(api: Api) -> None:
    job = await api.create_job()
    for path in (
        f"v2/live-videos/{uuid.uuid4()}/stop-and-cut",
        f"v2/live-videos/{uuid.uuid4()}/cut-and-publish",
        f"v2/live-videos/{uuid.uuid4()}/stop",
        "v2/live-videos/not-a-job/stop",
    ):
        status, answer = await call(api, "POST", path, json={})
        assert status == 404, (path, answer)
    # The other project's key, on its own project: this project's live is not there.
    for action in ("stop-and-cut", "cut-and-publish", "stop"):
        status, answer = await call(
            api, "POST", f"v2/live-videos/{job['id']}/{action}", api.other, json={}
        )
        assert status == 404, answer
    # ... nor may it use this project's path.
    status, _ = await call(
        api,
        "POST",
        f"v2/live-videos/{job['id']}/stop",
        headers=api.other.headers,
    )
    assert status == 403
    for video in (str(uuid.uuid4()), "not-a-uuid"):
        status, answer = await call(api, "GET", f"v1/videos/{video}")
        assert status == 404 and answer["errors"] == [f"video not found: {video}"], answer
    status, answer = await call(api, "GET", f"v1/videos?liveJobId={job['id']}", api.other)
    assert status == 404, answer


async def test_stop_ends_the_live_without_a_video(api: Api) -> None:
    job = await api.create_job()
    status, _ = await api.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    assert status == 201
    status, answer = await call(api, "POST", f"v2/live-videos/{job['name']}/stop")
    assert (status, answer["result"]) == (200, True)
    status, detail = await api.call("GET", f"/livejobs/{job['id']}")
    assert detail["result"]["online"] is False and detail["result"]["status"] == 1
    status, timings = await api.call("GET", f"/livejobs/{job['id']}/timings?pageSize=50")
    assert timings["result"][-1]["messageComment"] == "stop: the live ends without a video"
    status, answer = await call(api, "POST", f"v2/live-videos/{job['id']}/stop")  # offline: as is
    assert (status, answer["result"]) == (200, True)
    status, listing = await call(api, "GET", "v1/videos")
    assert (status, listing["result"], listing["resultInfo"]["totalCount"]) == (200, [], 0)


async def test_stop_and_cut_of_a_live_that_recorded_nothing_is_refused_and_the_live_goes_on(
    api: Api,
) -> None:
    job = await api.create_job()
    await api.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    status, answer = await call(api, "POST", f"v2/live-videos/{job['name']}/stop-and-cut", json={})
    assert status == 400, answer
    assert answer["errors"][0].startswith("id: nothing was recorded"), answer
    status, detail = await api.call("GET", f"/livejobs/{job['id']}")
    assert detail["result"]["online"] is True


async def test_a_playlist_without_a_valid_token_is_refused(api: Api) -> None:
    url = f"{api.base}/api/v1/{api.project.id}/videos/{uuid.uuid4()}/playlist.m3u8"
    async with api.session.get(url) as response:  # no API key, no token
        assert response.status == 400
    async with api.session.get(url + "?token=99999999999.x") as response:  # forged
        assert response.status == 403
        assert (await response.json())["errors"] == ["not a playback token of this video"]


# -- the bucket policy, on SeaweedFS ---------------------------------------------------------


def anonymous_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_private_videos_are_refused_to_anonymous_readers_only(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str
) -> None:
    storage = S3Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")
    private = f"live/show/videos/private/{uuid.uuid4()}/master.m3u8"
    keys = {
        "live": "live/show/180p/index.m3u8",
        "public video": f"live/show/videos/{uuid.uuid4()}/master.m3u8",
        "private video": private,
    }
    for key in keys.values():
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"#EXTM3U\n")
    # Someone else's statement in the bucket's policy is kept.
    theirs = {
        "Sid": "Theirs",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/their-secret/*",
        "Condition": {"Null": {"aws:userid": "true"}},
    }
    s3_client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]})
    )
    url = f"{s3_server.endpoint}/{bucket}"
    assert anonymous_get(f"{url}/{private}") == 200  # what SeaweedFS grants by default

    assert ensure_private_policy(storage, bucket) is True
    assert ensure_private_policy(storage, bucket) is False  # there already: unchanged
    assert anonymous_get(f"{url}/{keys['live']}") == 200
    assert anonymous_get(f"{url}/{keys['public video']}") == 200
    assert anonymous_get(f"{url}/{private}") == 403
    assert anonymous_get(f"{url}/{private}?X-Amz-Signature={secrets.token_hex(32)}") == 403
    assert anonymous_get(storage.presign(bucket, private, 60)) == 200
    assert s3_client.get_object(Bucket=bucket, Key=private)["Body"].read() == b"#EXTM3U\n"
    statements = json.loads(s3_client.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert [s.get("Sid") for s in statements] == ["Theirs", "OnairPrivateVideos"]
    assert private_statement(bucket)["Resource"] in [s["Resource"] for s in statements]
