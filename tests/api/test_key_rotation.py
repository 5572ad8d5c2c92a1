"""Stream key rotation: `POST .../livejobs/{id}/key` gives a job a new key, the old one dies."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any

import pytest

from tests.support.media import SMALL_TEMPLATE
from tests.support.publishers import publish
from tests.support.service import Api, Live


async def rotate(api: Api, ref: object, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    return await api.call("POST", f"/livejobs/{ref}/key", **kwargs)


async def test_rotation_gives_a_new_key_and_the_old_one_stops_working(api: Api) -> None:
    job = await api.create_job()
    old_key = job["key"]
    status, body = await rotate(api, job["id"])
    assert status == 201, body
    assert body["success"] is True and body["messages"]
    rotated = body["result"]
    new_key = rotated["key"]
    assert new_key != old_key
    assert uuid.UUID(new_key).version == 4
    assert (rotated["id"], rotated["name"]) == (job["id"], job["name"])
    assert rotated["storageMasterFile"] == job["storageMasterFile"]  # the same recording

    # The old key is gone from everything the API shows.
    _, detail = await api.call("GET", f"/livejobs/{job['id']}")
    assert detail["result"]["key"] == new_key
    assert old_key not in json.dumps(detail)
    _, listed = await api.call("GET", "/livejobs")
    assert [row["key"] for row in listed["result"]] == [new_key]

    # The online toggle: the old key is an unknown key, the new one works.
    status, body = await api.call("POST", f"/livejobs/{old_key}", json={"online": True})
    assert status == 404 and body["errors"] == ["live job not found"]
    status, body = await api.call("POST", f"/livejobs/{new_key}", json={"online": True})
    assert status == 201 and body["result"]["online"] is True

    # The timing says it happened, naming neither key.
    _, timings = await api.call("GET", f"/livejobs/{job['id']}/timings")
    rows = [t for t in timings["result"] if t["childStatus"] == "StreamKeyRotated"]
    assert len(rows) == 1
    assert old_key not in json.dumps(timings) and new_key not in json.dumps(timings)


async def test_rotation_takes_the_id_or_the_name_and_each_rotation_is_new(api: Api) -> None:
    job = await api.create_job()
    keys = {job["key"]}
    for ref in (job["id"], job["name"], job["id"]):
        status, body = await rotate(api, ref)
        assert status == 201, body
        keys.add(body["result"]["key"])
    assert len(keys) == 4
    # `{id}` is the job's id or name, never its stream key (that is the toggle's path).
    _, detail = await api.call("GET", f"/livejobs/{job['id']}")
    status, _ = await rotate(api, detail["result"]["key"])
    assert status == 404


async def test_rotating_an_online_job_keeps_it_online(api: Api) -> None:
    job = await api.create_job()
    await api.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    _, body = await rotate(api, job["id"])
    assert body["result"]["online"] is True and body["result"]["status"] == 2
    new_key = body["result"]["key"]
    status, body = await api.call("POST", f"/livejobs/{new_key}", json={"online": False})
    assert status == 201 and body["result"]["online"] is False


async def test_rotation_is_authenticated_and_project_scoped(api: Api) -> None:
    theirs = await api.create_job(api.other, bucket="onair-test-other")
    status, _ = await rotate(api, theirs["id"])  # my key, my path, their job
    assert status == 404
    status, _ = await rotate(api, theirs["id"], project=api.other, headers=api.project.headers)
    assert status == 403
    status, _ = await rotate(api, theirs["id"], project=api.other, headers={})
    assert status == 401
    for ref in ("999999", str(uuid.uuid4()), "not-a-job"):
        status, _ = await rotate(api, ref)
        assert status == 404
    _, detail = await api.call("GET", f"/livejobs/{theirs['id']}", api.other)
    assert detail["result"]["key"] == theirs["key"]  # untouched


@pytest.mark.slow  # a real-time publisher
async def test_a_live_on_the_old_key_is_not_cut_and_new_publishers_need_the_new_key(
    live: Live,
) -> None:
    bucket = "rotation-" + secrets.token_hex(4)
    job = await live.create_online_job(SMALL_TEMPLATE, bucket, "rotated")
    first = asyncio.create_task(publish(live.rtmp_url(job["key"]), 6))
    await live.wait_status(job, 3)
    rotated = (await live.call("POST", f"/livejobs/{job['id']}/key"))["result"]
    assert rotated["key"] != job["key"] and rotated["status"] == 3
    # A new publisher with the old key is refused as an unknown key (not as "already
    # publishing", which would have left a timing); the live goes on.
    again = await publish(live.rtmp_url(job["key"]), 2, realtime=False)
    assert again.returncode != 0
    assert await live.status(job) == 3
    assert not any("already publishing" in t["messageComment"] for t in await live.timings(job))
    assert (await first).returncode == 0  # published to its end, never cut
    # Once it has ended, a publisher comes back with the new key only.
    await live.wait_status(job, 4)
    assert (await publish(live.rtmp_url(job["key"]), 2, realtime=False)).returncode != 0
    back = await publish(live.rtmp_url(rotated["key"]), 2, realtime=False)
    assert back.returncode == 0, back.stderr
    children = [t["childStatus"] for t in await live.timings(job)]
    assert "StreamKeyRotated" in children
    assert children.count("PublisherConnected") + children.count("PublisherReconnected") == 2
