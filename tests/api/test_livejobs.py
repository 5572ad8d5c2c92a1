"""The live-jobs endpoints against the reference pages: envelope, fields, errors, paging."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.support.service import CREATE_BODY, Api, elsewhere

ENVELOPE_KEYS = {"success", "errors", "messages", "result", "resultInfo", "statusCode"}
PAGE_KEYS = {"totalCount", "pageIndex", "pageSize", "totalPages", "hasNextPage", "hasPreviousPage"}
STAT_KEYS = {
    "width", "height", "framerate", "videoDataRate", "videoCodecId", "audioDataRate",
    "audioSampleRate", "audioSampleSize", "audioCodecId", "audioChannels", "stereo", "encoder",
}  # fmt: skip


def assert_envelope(body: dict[str, Any], status: int) -> None:
    assert set(body) == ENVELOPE_KEYS
    assert body["statusCode"] == status
    assert body["success"] is (200 <= status < 300)


async def test_create_answers_201_with_every_documented_field(api: Api) -> None:
    status, body = await api.call("POST", "/livejobs", json=CREATE_BODY)
    assert status == 201
    assert_envelope(body, 201)
    job = body["result"]
    for field in (
        "name", "key", "destination", "description", "projectId", "status", "startDateTime",
        "endDateTime", "jobTemplateId", "argoResourceName", "resourceName", "bucket",
        "cdnDistribution", "rtmpServer", "webSocketConnection", "cdn", "storageMasterFile",
        "outputManifests", "input", "statistics",
    ):  # fmt: skip
        assert field in job, field
    assert uuid.UUID(job["name"]).version == 4
    assert uuid.UUID(job["key"]).version == 4
    assert job["name"] != job["key"]
    assert job["projectId"] == api.project.id
    assert job["status"] == 1  # Offline until toggled online
    assert job["rtmpServer"] == f"rtmp://127.0.0.1:{api.settings.rtmp_port}/live/"
    assert job["destination"] == "shows/news" and job["bucket"] == "onair-test"
    storage = f"{api.settings.s3_endpoint}/onair-test/shows/news/2026/ep1"
    assert job["storageMasterFile"] == f"{storage}/master.m3u8"
    assert job["outputManifests"] == {
        name: f"{storage}/{name}/index.m3u8" for name in ("720p", "480p", "360p")
    }
    assert job["cdn"] is None  # no CDN configured
    assert job["input"]["serverType"] == 0 and job["input"]["inputClass"] == 0
    assert [o["enabled"] for o in job["input"]["serverTypeOptions"]] == [True, False, False]
    assert [o["value"] for o in job["input"]["serverTypeOptions"]] == ["RTMP", "SRT", "HLS"]
    assert [o["value"] for o in job["input"]["inputClassOptions"]] == ["Single", "Standard"]
    assert set(job["statistics"]) == STAT_KEYS
    assert job["statistics"]["width"] == 0 and job["statistics"]["encoder"] == ""


async def test_stream_keys_are_unique_per_job(api: Api) -> None:
    keys = {(await api.create_job(**elsewhere(f"2026/ep{i}")))["key"] for i in range(5)}
    assert len(keys) == 5


async def test_input_fields_accepted_at_top_level_and_unknown_fields_ignored(api: Api) -> None:
    body = {k: v for k, v in CREATE_BODY.items() if k != "input"}
    body.update(filePath="flat", serverType=1, inputClass=1, surprise={"x": 1})
    status, answer = await api.call("POST", "/livejobs", json=body)
    assert status == 201, answer
    assert answer["result"]["input"]["filePath"] == "flat"
    assert answer["result"]["input"]["serverType"] == 1
    assert answer["result"]["input"]["inputClassOptions"][1]["enabled"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"jobTemplateId": 99}, "jobTemplateId"),
        ({"jobTemplateId": "2"}, "jobTemplateId"),
        ({"bucket": ""}, "bucket"),
        ({"bucket": "Bad_Bucket"}, "bucket"),
        ({"destination": ""}, "destination"),
        ({"destination": "../../etc"}, "destination"),
        ({"destination": "/absolute"}, "destination"),
        ({"destination": "a\x00b"}, "destination"),
        ({"destination": "a/\nb"}, "destination"),
        ({"input": {**CREATE_BODY["input"], "filePath": "x/../../y"}}, "input.filePath"),
        ({"input": {**CREATE_BODY["input"], "filePath": ""}}, "input.filePath"),
        ({"input": {**CREATE_BODY["input"], "serverType": 3}}, "input.serverType"),
        ({"input": {**CREATE_BODY["input"], "serverType": True}}, "input.serverType"),
        ({"input": {**CREATE_BODY["input"], "inputClass": 2}}, "input.inputClass"),
        ({"input": {**CREATE_BODY["input"], "callbackUrl": "ftp://x/y"}}, "input.callbackUrl"),
        (
            {"input": {**CREATE_BODY["input"], "callbackUrl": "javascript:alert(1)"}},
            "input.callbackUrl",
        ),
        ({"cdnDistribution": "yes"}, "cdnDistribution"),
        ({"description": 5}, "description"),
    ],
)
async def test_create_names_each_bad_field(api: Api, change: dict[str, Any], field: str) -> None:
    status, body = await api.call("POST", "/livejobs", json={**CREATE_BODY, **change})
    assert status == 400
    assert_envelope(body, 400)
    assert len(body["errors"]) == 1, body["errors"]
    assert body["errors"][0].startswith(f"{field}:")
    assert body["result"] is None


async def test_create_reports_every_bad_field_at_once(api: Api) -> None:
    status, body = await api.call(
        "POST", "/livejobs", json={"jobTemplateId": 7, "destination": "..", "input": {}}
    )
    assert status == 400
    fields = {e.split(":")[0] for e in body["errors"]}
    assert fields == {
        "jobTemplateId", "destination", "bucket", "input.filePath", "input.serverType",
        "input.inputClass",
    }  # fmt: skip


async def test_malformed_json_is_400(api: Api) -> None:
    status, body = await api.call(
        "POST", "/livejobs", data=b"{not json", headers={**api.project.headers}
    )
    assert status == 400
    assert body["errors"] == ["body: malformed JSON"]
    status, body = await api.call("POST", "/livejobs", json=[1, 2])
    assert status == 400 and body["errors"] == ["body: must be a JSON object"]


async def test_no_or_wrong_key_is_401(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {api.project.key}x"},
        {"x-api-key": api.project.key[:-1]},
        {"Authorization": f"Basic {api.project.key}"},
    ):
        status, body = await api.call("GET", "/livejobs", headers=headers)
        assert status == 401, headers
        assert_envelope(body, 401)
        assert body["errors"]


async def test_x_api_key_header_is_accepted(api: Api) -> None:
    status, body = await api.call("GET", "/livejobs", headers={"x-api-key": api.project.key})
    assert status == 200, body


async def test_key_on_another_projects_path_is_403(api: Api) -> None:
    job = await api.create_job(api.other)
    for method, path in (
        ("GET", "/livejobs"),
        ("GET", f"/livejobs/{job['id']}"),
        ("GET", "/livejobs/outputs"),
        ("GET", "/jobtemplates"),
    ):
        status, body = await api.call(method, path, api.other, headers=api.project.headers)
        assert status == 403, path
        assert_envelope(body, 403)
    status, _ = await api.call(
        "POST",
        f"/livejobs/{job['key']}",
        api.other,
        headers=api.project.headers,
        json={"online": True},
    )
    assert status == 403


async def test_another_projects_job_is_never_visible(api: Api) -> None:
    theirs = await api.create_job(api.other, bucket="onair-test-other")
    mine = await api.create_job()
    for ref in (str(theirs["id"]), theirs["name"]):
        for suffix in ("", "/timings", "/stats"):
            status, body = await api.call("GET", f"/livejobs/{ref}{suffix}")
            assert status == 404, (ref, suffix)
            assert_envelope(body, 404)
    status, _ = await api.call("POST", f"/livejobs/{theirs['key']}", json={"online": True})
    assert status == 404
    status, _ = await api.call("GET", f"/livejobs/outputs?liveJobId={theirs['id']}")
    assert status == 404
    status, body = await api.call("GET", "/livejobs")
    assert [j["id"] for j in body["result"]] == [mine["id"]]
    status, body = await api.call("GET", "/livejobs/outputs")
    assert {o["liveJobId"] for o in body["result"]} == {mine["id"]}


async def test_get_by_id_and_by_name(api: Api) -> None:
    job = await api.create_job()
    for ref in (str(job["id"]), job["name"]):
        status, body = await api.call("GET", f"/livejobs/{ref}")
        assert status == 200
        assert_envelope(body, 200)
        assert body["result"]["key"] == job["key"]
        assert body["resultInfo"] is None
    for ref in ("999999", str(uuid.uuid4()), "not-a-job"):
        status, body = await api.call("GET", f"/livejobs/{ref}")
        assert status == 404
        assert body["errors"]


async def test_list_paging_and_search(api: Api) -> None:
    for i in range(12):
        await api.create_job(
            description=f"match-{i}" if i % 3 == 0 else f"other {i}",
            **elsewhere(f"2026/ep{i}"),
        )
    status, body = await api.call("GET", "/livejobs?pageIndex=1&pageSize=5")
    assert status == 200
    assert_envelope(body, 200)
    info = body["resultInfo"]
    assert set(info) == PAGE_KEYS
    assert info == {
        "totalCount": 12, "pageIndex": 1, "pageSize": 5, "totalPages": 3,
        "hasNextPage": True, "hasPreviousPage": False,
    }  # fmt: skip
    assert len(body["result"]) == 5
    row = body["result"][0]
    assert set(row) == {
        "id", "name", "key", "status", "description", "filePath", "insertDate",
        "startDateTime", "endDateTime",
    }  # fmt: skip
    assert row["status"] == "Offline"
    _, last = await api.call("GET", "/livejobs?pageIndex=3&pageSize=5")
    assert len(last["result"]) == 2
    assert last["resultInfo"]["hasNextPage"] is False
    assert last["resultInfo"]["hasPreviousPage"] is True
    all_ids = {
        r["id"]
        for p in (1, 2, 3)
        for r in (await api.call("GET", f"/livejobs?pageIndex={p}&pageSize=5"))[1]["result"]
    }
    assert len(all_ids) == 12
    _, found = await api.call("GET", "/livejobs?search=match-")
    assert sorted(r["description"] for r in found["result"]) == [
        "match-0",
        "match-3",
        "match-6",
        "match-9",
    ]
    assert found["resultInfo"]["totalCount"] == 4
    _, none = await api.call("GET", "/livejobs?search=%25")  # a literal %, not a wildcard
    assert none["resultInfo"]["totalCount"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("pageIndex=0", "pageIndex"),
        ("pageIndex=x", "pageIndex"),
        ("pageSize=0", "pageSize"),
        ("pageSize=1000", "pageSize"),
    ],
)
async def test_bad_paging_is_400(api: Api, query: str, field: str) -> None:
    status, body = await api.call("GET", f"/livejobs?{query}")
    assert status == 400
    assert body["errors"][0].startswith(f"{field}:")


async def test_toggle_online_and_offline(api: Api) -> None:
    job = await api.create_job()
    status, body = await api.call(
        "POST",
        f"/livejobs/{job['key']}",
        json={
            "online": True,
            "startDateTime": "2026-01-28T23:33:39.961Z",
            "finishDateTime": "2026-01-29T00:33:39.961Z",
        },
    )
    assert status == 201
    assert_envelope(body, 201)
    assert body["result"] == {"online": True, "playBackPathURL": job["storageMasterFile"]}
    _, detail = await api.call("GET", f"/livejobs/{job['id']}")
    assert detail["result"]["status"] == 2  # Processing: waiting for the publisher
    assert detail["result"]["startDateTime"] is not None
    _, listed = await api.call("GET", "/livejobs")
    assert listed["result"][0]["status"] == "Processing"

    status, body = await api.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    assert status == 201
    assert body["result"]["online"] is False
    _, detail = await api.call("GET", f"/livejobs/{job['id']}")
    assert detail["result"]["status"] == 1
    assert detail["result"]["endDateTime"] is not None

    _, timings = await api.call("GET", f"/livejobs/{job['id']}/timings")
    assert [(t["status"], t["childStatus"]) for t in timings["result"]] == [
        ("Offline", "Created"),
        ("Processing", "WentOnline"),
        ("Offline", "WentOffline"),
    ]
    assert all(t["messageComment"] and t["startDateTime"] for t in timings["result"])


async def test_toggle_is_idempotent_and_validated(api: Api) -> None:
    job = await api.create_job()
    for _ in range(2):
        status, _ = await api.call("POST", f"/livejobs/{job['key']}", json={"online": True})
        assert status == 201
    _, timings = await api.call("GET", f"/livejobs/{job['id']}/timings")
    assert timings["resultInfo"]["totalCount"] == 2  # Created, WentOnline: no duplicate
    for body, field in (
        ({}, "online"),
        ({"online": "yes"}, "online"),
        ({"online": True, "startDateTime": "tomorrow"}, "startDateTime"),
        (
            {
                "online": True,
                "startDateTime": "2026-01-02T00:00:00Z",
                "finishDateTime": "2026-01-01T00:00:00Z",
            },
            "finishDateTime",
        ),
    ):
        status, answer = await api.call("POST", f"/livejobs/{job['key']}", json=body)
        assert status == 400, body
        assert answer["errors"][0].startswith(f"{field}:")
    status, _ = await api.call("POST", f"/livejobs/{uuid.uuid4()}", json={"online": True})
    assert status == 404


async def test_outputs_one_per_rendition(api: Api) -> None:
    first = await api.create_job(jobTemplateId=1)
    second = await api.create_job(jobTemplateId=3, **elsewhere("2026/ep2"))
    status, body = await api.call("GET", "/livejobs/outputs")
    assert status == 200
    assert_envelope(body, 200)
    assert body["resultInfo"]["totalCount"] == 5  # 4 renditions + passthrough's 1
    _, body = await api.call("GET", f"/livejobs/outputs?liveJobId={first['id']}")
    rows = body["result"]
    assert [r["name"] for r in rows] == ["1080p", "720p", "480p", "360p"]
    for row in rows:
        assert set(row) == {
            "liveJobId",
            "outputId",
            "name",
            "progress",
            "status",
            "lockKey",
            "counter",
            "encoderId",
            "skipped",
            "skipReason",
        }
        assert row["liveJobId"] == first["id"]
        # Nothing has run: honest zeros and nulls.
        assert (row["progress"], row["counter"], row["lockKey"]) == (0, 0, None)
        assert row["status"] == 1
        assert (row["skipped"], row["skipReason"]) == (False, None)
    _, body = await api.call("GET", f"/livejobs/outputs?liveJobId={second['id']}")
    assert [r["name"] for r in body["result"]] == ["source"]
    status, body = await api.call("GET", "/livejobs/outputs?liveJobId=abc")
    assert status == 400 and body["errors"][0].startswith("liveJobId:")


async def test_timings_paged_and_filtered_by_output(api: Api) -> None:
    job = await api.create_job()
    for online in (True, False, True, False):
        await api.call("POST", f"/livejobs/{job['key']}", json={"online": online})
    _, body = await api.call("GET", f"/livejobs/{job['id']}/timings?pageSize=2&pageIndex=2")
    assert body["resultInfo"]["totalCount"] == 5
    assert body["resultInfo"]["totalPages"] == 3
    assert [t["childStatus"] for t in body["result"]] == ["WentOffline", "WentOnline"]
    _, outputs = await api.call("GET", f"/livejobs/outputs?liveJobId={job['id']}")
    output_id = outputs["result"][0]["outputId"]
    _, body = await api.call("GET", f"/livejobs/{job['id']}/timings?outputId={output_id}")
    assert body["result"] == []  # no output-level event yet
    status, body = await api.call("GET", f"/livejobs/{job['id']}/timings?outputId=-1")
    assert status == 400 and body["errors"][0].startswith("outputId:")


async def test_stats_before_media_are_zero(api: Api) -> None:
    job = await api.create_job()
    status, body = await api.call("GET", f"/livejobs/{job['id']}/stats")
    assert status == 200
    assert_envelope(body, 200)
    assert len(body["result"]) == 1
    stats = body["result"][0]
    assert STAT_KEYS <= set(stats)
    assert all(stats[k] in (0, False, "") for k in STAT_KEYS)
    assert stats["outputs"] == [] and stats["droppedFrames"] == 0


async def test_job_templates_paged(api: Api) -> None:
    status, body = await api.call("GET", "/jobtemplates")
    assert status == 200
    assert_envelope(body, 200)
    names = {t["id"]: t["name"] for t in body["result"]}
    assert names == {1: "1080p ladder", 2: "720p ladder", 3: "passthrough", 4: "small ladder"}
    assert set(body["result"][0]) == {"id", "name", "jobTemplateType", "category", "description"}
    _, page = await api.call("GET", "/jobtemplates?pageSize=3&pageIndex=2")
    assert [t["id"] for t in page["result"]] == [4]
    assert page["resultInfo"]["totalCount"] == 4


async def test_unknown_version_and_route_are_404_in_the_envelope(api: Api) -> None:
    async with api.session.get(
        f"{api.base}/api/v7/projects/{api.project.id}/livejobs", headers=api.project.headers
    ) as response:
        body = await response.json()
    assert response.status == 404 and body["statusCode"] == 404 and body["errors"]
    async with api.session.delete(api.url("/livejobs"), headers=api.project.headers) as response:
        body = await response.json()
    assert response.status == 405 and body["errors"]


async def test_concurrent_creates_never_corrupt_the_store(api: Api) -> None:
    results = await asyncio.gather(
        *(
            api.call(
                "POST",
                "/livejobs",
                json={**CREATE_BODY, "description": f"c{i}", **elsewhere(f"2026/c{i}")},
            )
            for i in range(40)
        )
    )
    assert all(status == 201 for status, _ in results)
    _, body = await api.call("GET", "/livejobs?pageSize=100")
    assert body["resultInfo"]["totalCount"] == 40
    assert len({r["key"] for r in body["result"]}) == 40
