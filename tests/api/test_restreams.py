"""The restreams' endpoints through the running API (real store, real SeaweedFS): the
reference's fields and the forwarding's state, list, toggle, delete, the project's
walls, every bad field named, the limit per live video, private IP literals refused,
the runtime told of every change, and the stream key in no log line."""

from __future__ import annotations

import logging
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from api.app import APP_ROUTES
from api.openapi import openapi_document
from api.restreams.service import RestreamLiveState
from api.restreams.views import RESTREAMS_KEY
from api.settings import Settings
from media.outbound import OutboundPolicy
from packager.s3server import EmbeddedS3
from tests.support.service import Api, Project, elsewhere, running_api

REFERENCE_FIELDS = {"id", "title", "streamKey", "streamUrl", "status", "videoId"}
FORWARDING_FIELDS = {
    "state",
    "lastError",
    "connectedSince",
    "reconnects",
    "bytesSent",
    "bitrate",
    "droppedPackets",
    "forwarding",
}
YOUTUBE = "rtmp://a.rtmp.youtube.com/live2"


def a_key() -> str:
    return "sk-" + secrets.token_hex(12)


def body(video_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "videoId": video_id,
        "title": "YouTube",
        "streamUrl": YOUTUBE,
        "streamKey": a_key(),
        "status": True,
        **changes,
    }


async def call(
    api: Api, method: str, path: str, project: Project | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    """`path` under `/api/v1/{projectId}/` (the platform's paths, no `projects/`)."""
    project = project or api.project
    headers = kwargs.pop("headers", project.headers)
    url = f"{api.base}/api/v1/{project.id}/{path}"
    async with api.session.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def create(api: Api, video_id: str, **changes: Any) -> dict[str, Any]:
    status, answer = await call(api, "POST", "restreams", json=body(video_id, **changes))
    assert status == 201, answer
    return answer["result"]  # type: ignore[no-any-return]


async def listed(api: Api, video_id: str, project: Project | None = None) -> list[dict[str, Any]]:
    status, answer = await call(api, "GET", f"live-video/{video_id}/restreams", project)
    assert status == 200, answer
    return answer["result"]  # type: ignore[no-any-return]


async def test_create_answers_the_references_fields_and_the_forwardings_state(api: Api) -> None:
    job = await api.create_job()
    sent = body(job["name"], title="  YouTube main  ")
    status, answer = await call(api, "POST", "restreams", json=sent)
    assert status == 201, answer
    assert (answer["success"], answer["statusCode"], answer["resultInfo"]) == (True, 201, None)
    result = answer["result"]
    assert set(result) == REFERENCE_FIELDS | FORWARDING_FIELDS
    assert isinstance(result["id"], int)
    assert {k: result[k] for k in REFERENCE_FIELDS - {"id"}} == {
        "title": "YouTube main",
        "streamKey": sent["streamKey"],
        "streamUrl": YOUTUBE,
        "status": True,
        "videoId": job["name"],
    }
    assert {k: result[k] for k in FORWARDING_FIELDS} == {
        "state": "idle",
        "lastError": None,
        "connectedSince": None,
        "reconnects": 0,
        "bytesSent": 0,
        "bitrate": 0,
        "droppedPackets": 0,
        "forwarding": None,
    }
    # The live job's integer id names the live video too; the answer says its name.
    by_id = await create(
        api, str(job["id"]), streamUrl="rtmps://live-api-s.facebook.com:443/rtmp/", status=False
    )
    assert (by_id["videoId"], by_id["status"]) == (job["name"], False)
    assert by_id["id"] > result["id"]


async def test_a_live_videos_restreams_are_listed_paged_in_the_order_they_were_made(
    api: Api,
) -> None:
    job = await api.create_job()
    other_job = await api.create_job(**elsewhere("elsewhere"))
    made = [
        await create(api, job["name"], title=title, streamUrl=url)
        for title, url in (
            ("YouTube", YOUTUBE),
            ("Twitch", "rtmp://live.twitch.tv/app"),
            ("Facebook", "rtmps://live-api-s.facebook.com:443/rtmp/"),
        )
    ]
    await create(api, other_job["name"], title="not this video's")
    assert await listed(api, job["name"]) == made
    assert await listed(api, str(job["id"])) == made
    status, answer = await call(
        api, "GET", f"live-video/{job['name']}/restreams?pageIndex=2&pageSize=2"
    )
    assert status == 200, answer
    assert [r["title"] for r in answer["result"]] == ["Facebook"]
    assert answer["resultInfo"] == {
        "totalCount": 3,
        "pageIndex": 2,
        "pageSize": 2,
        "totalPages": 2,
        "hasNextPage": False,
        "hasPreviousPage": True,
    }
    fresh = await api.create_job(**elsewhere("fresh"))
    assert await listed(api, fresh["name"]) == []


async def test_toggle_flips_the_status_and_the_runtime_reads_the_enabled_ones(api: Api) -> None:
    job = await api.create_job()
    restream = await create(api, job["name"])
    service = api.app[RESTREAMS_KEY]
    for expected in (False, True):
        status, answer = await call(api, "PUT", f"restreams/{restream['id']}/toggle")
        assert status == 200, answer
        assert answer["result"] == {"id": restream["id"], "status": expected}
        assert [r["status"] for r in await listed(api, job["name"])] == [expected]
        targets = await service.enabled_for_job(job["id"])
        assert [t.id for t in targets] == ([restream["id"]] if expected else [])
    (target,) = await service.enabled_for_job(job["id"])
    assert (target.title, target.stream_url, target.stream_key) == (
        restream["title"],
        restream["streamUrl"],
        restream["streamKey"],
    )
    assert restream["streamKey"] not in repr(target)


async def test_delete_answers_true_and_the_restream_is_gone(api: Api) -> None:
    job = await api.create_job()
    kept, gone = await create(api, job["name"]), await create(api, job["name"])
    status, answer = await call(api, "DELETE", f"restreams/{gone['id']}")
    assert (status, answer["result"], answer["success"]) == (200, True, True), answer
    assert await listed(api, job["name"]) == [kept]
    for method, path in (
        ("DELETE", f"restreams/{gone['id']}"),
        ("PUT", f"restreams/{gone['id']}/toggle"),
    ):
        status, answer = await call(api, method, path)
        assert status == 404, answer
        assert answer["errors"] == [f"restream not found: {gone['id']}"]


async def test_another_projects_restreams_and_lives_are_not_found(api: Api) -> None:
    job = await api.create_job()
    restream = await create(api, job["name"])
    other = api.other
    # The other project's key on its own project: none of this project's is there.
    for method, path in (
        ("PUT", f"restreams/{restream['id']}/toggle"),
        ("DELETE", f"restreams/{restream['id']}"),
        ("GET", f"live-video/{job['name']}/restreams"),
        ("GET", f"live-video/{job['id']}/restreams"),
    ):
        status, answer = await call(api, method, path, other)
        assert status == 404, (method, path, answer)
    status, answer = await call(api, "POST", "restreams", other, json=body(job["name"]))
    assert status == 404 and answer["errors"] == [f"live job not found: {job['name']}"], answer
    # ... nor may its key use this project's paths.
    status, _ = await call(api, "DELETE", f"restreams/{restream['id']}", headers=other.headers)
    assert status == 403
    # Unknown ones.
    for method, path in (
        ("PUT", "restreams/999999/toggle"),
        ("DELETE", "restreams/not-a-number"),
        ("DELETE", "restreams/0"),
        ("GET", f"live-video/{uuid.uuid4()}/restreams"),
        ("GET", "live-video/not-a-video/restreams"),
    ):
        status, answer = await call(api, method, path)
        assert status == 404, (method, path, answer)
    status, answer = await call(api, "POST", "restreams", json=body(str(uuid.uuid4())))
    assert status == 404, answer
    # Without a key: 401, and nothing changed.
    status, _ = await call(api, "DELETE", f"restreams/{restream['id']}", headers={})
    assert status == 401
    assert [r["id"] for r in await listed(api, job["name"])] == [restream["id"]]


BAD_FIELDS = [
    ({"streamUrl": "http://a.rtmp.youtube.com/live2"}, "streamUrl: must be an rtmp:// or rtmps://"),
    ({"streamUrl": "srt://a.example.com:9000/live"}, "streamUrl: must be an rtmp:// or rtmps://"),
    ({"streamUrl": "a.rtmp.youtube.com/live2"}, "streamUrl: must be an rtmp:// or rtmps://"),
    ({"streamUrl": "rtmp://a.rtmp.youtube.com"}, "streamUrl: must be an rtmp:// or rtmps:// URL"),
    ({"streamUrl": "rtmp://a.rtmp.youtube.com/"}, "streamUrl: must be an rtmp:// or rtmps:// URL"),
    ({"streamUrl": "rtmp:///live2"}, "streamUrl: must be an rtmp:// or rtmps:// URL"),
    ({"streamUrl": "rtmp://me:pw@a.rtmp.youtube.com/live2"}, "streamUrl: must not carry a user"),
    ({"streamUrl": "rtmp://me@a.rtmp.youtube.com/live2"}, "streamUrl: must not carry a user"),
    ({"streamUrl": "rtmp://a.rtmp.youtube.com:0/live2"}, "streamUrl: its port must be from 1"),
    ({"streamUrl": "rtmp://a.rtmp.youtube.com:65536/live2"}, "streamUrl: must be an rtmp://"),
    ({"streamUrl": "rtmp://a.rtmp.youtube.com:x/live2"}, "streamUrl: must be an rtmp://"),
    ({"streamUrl": "rtmp://a.rtmp.youtube.com/live2?k=v"}, "streamUrl: must not have a query"),
    ({"streamUrl": "rtmp://a.rtmp.youtube.com/live2#x"}, "streamUrl: must not have a query"),
    ({"streamUrl": "rtmp://a.rtmp youtube.com/live2"}, "streamUrl: must not contain whitespace"),
    ({"streamUrl": "rtmp://127.1/live2"}, "streamUrl: not a URL onair can open: its host is not"),
    ({"streamUrl": "rtmp://127.0.0.1/live2"}, "streamUrl: its host 127.0.0.1 is a loopback"),
    ({"streamUrl": "rtmp://10.1.2.3:1935/app"}, "streamUrl: its host 10.1.2.3 is a private"),
    ({"streamUrl": "rtmp://192.168.0.9/app"}, "streamUrl: its host 192.168.0.9 is a private"),
    ({"streamUrl": "rtmp://[::1]/app"}, "streamUrl: its host ::1 is a loopback"),
    ({"streamUrl": "rtmp://169.254.10.1/app"}, "streamUrl: its host 169.254.10.1 is a link-local"),
    ({"streamUrl": "rtmp://a.example.com/" + "x" * 1024}, "streamUrl: at most 1024 characters"),
    ({"streamUrl": ""}, "streamUrl: must not be empty"),
    ({"streamKey": ""}, "streamKey: must not be empty"),
    ({"streamKey": "abc def"}, "streamKey: must not contain whitespace or control characters"),
    ({"streamKey": " abc"}, "streamKey: must not contain whitespace or control characters"),
    ({"streamKey": "abc\ndef"}, "streamKey: must not contain whitespace or control characters"),
    ({"streamKey": "abc\u200bdef"}, "streamKey: must not contain whitespace or control"),
    ({"streamKey": "k" * 513}, "streamKey: at most 512 characters"),
    ({"title": ""}, "title: must not be empty"),
    ({"title": "   "}, "title: must not be empty"),
    ({"title": "a\u0000b"}, "title: must not contain control characters"),
    ({"title": "t" * 501}, "title: at most 500 characters"),
    ({"videoId": ""}, "videoId: must not be empty"),
    ({"videoId": 7}, "videoId: must be a string"),
    ({"title": 7}, "title: must be a string"),
    ({"streamUrl": ["rtmp://a.rtmp.youtube.com/live2"]}, "streamUrl: must be a string"),
    ({"streamKey": None}, "streamKey: must be a string"),
    ({"status": "true"}, "status: must be true or false"),
    ({"status": 1}, "status: must be true or false"),
    ({"status": None}, "status: must be true or false"),
]


async def test_a_bad_field_is_a_400_naming_it_and_nothing_is_made(api: Api) -> None:
    job = await api.create_job()  # one app for every case: each would start its own
    for changes, error in BAD_FIELDS:
        status, answer = await call(api, "POST", "restreams", json=body(job["name"], **changes))
        assert status == 400, (changes, answer)
        assert len(answer["errors"]) == 1 and answer["errors"][0].startswith(error), answer
    assert await listed(api, job["name"]) == []


async def test_each_missing_or_bad_field_has_its_own_message(api: Api) -> None:
    job = await api.create_job()
    for field in ("videoId", "title", "streamUrl", "streamKey", "status"):
        sent = body(job["name"])
        del sent[field]
        status, answer = await call(api, "POST", "restreams", json=sent)
        assert (status, answer["errors"]) == (400, [f"{field}: is required"]), answer
    status, answer = await call(api, "POST", "restreams", json={})
    assert status == 400
    assert sorted(answer["errors"]) == sorted(
        f"{f}: is required" for f in ("videoId", "title", "streamUrl", "streamKey", "status")
    )
    status, answer = await call(
        api,
        "POST",
        "restreams",
        json=body(job["name"], streamUrl="rtmp://a.b.example/", streamKey="a b", status="yes"),
    )
    assert status == 400
    assert [e.split(":", 1)[0] for e in answer["errors"]] == ["streamUrl", "streamKey", "status"]
    for raw, error in (("[]", "body: must be a JSON object"), ("{", "body: malformed JSON")):
        status, answer = await call(
            api, "POST", "restreams", data=raw, headers={**api.project.headers}
        )
        assert (status, answer["errors"]) == (400, [error]), answer
    # A cloud metadata address is refused whatever the policy, and says so.
    status, answer = await call(
        api, "POST", "restreams", json=body(job["name"], streamUrl="rtmp://169.254.169.254/a")
    )
    assert status == 400
    assert answer["errors"] == [
        "streamUrl: its host 169.254.169.254 is a cloud metadata address: refused"
    ]


async def test_an_eleventh_restream_of_a_live_video_is_refused_naming_the_limit(
    api: Api,
) -> None:
    job = await api.create_job()
    for i in range(10):
        await create(api, job["name"], title=f"destination {i}")
    status, answer = await call(api, "POST", "restreams", json=body(job["name"]))
    assert status == 400, answer
    assert answer["errors"] == [
        "videoId: a live video has at most 10 restreams, and this one has 10: delete one first"
    ]
    assert len(await listed(api, job["name"])) == 10
    # One deleted, one may be made again.
    first = (await listed(api, job["name"]))[0]
    assert (await call(api, "DELETE", f"restreams/{first['id']}"))[0] == 200
    await create(api, job["name"])


async def test_private_ip_literals_are_accepted_when_the_outbound_policy_allows_them(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    async with running_api(tmp_path, s3_server, outbound=OutboundPolicy(allow_private=True)) as api:
        job = await api.create_job()
        for url in ("rtmp://127.0.0.1:1935/live", "rtmp://10.0.0.5/app", "rtmp://[::1]/app"):
            assert (await create(api, job["name"], streamUrl=url))["streamUrl"] == url
        status, answer = await call(
            api, "POST", "restreams", json=body(job["name"], streamUrl="rtmp://169.254.169.254/a")
        )
        assert status == 400, answer


async def test_the_runtime_is_told_of_every_change_and_its_states_are_answered(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    job = await api.create_job()
    told: list[int] = []

    async def on_change(job_id: int) -> None:
        told.append(job_id)

    live: dict[int, RestreamLiveState] = {}

    def states(job_id: int) -> dict[int, RestreamLiveState]:
        return live if job_id == job["id"] else {}

    api.app[RESTREAMS_KEY].attach_runtime(states=states, on_change=on_change)
    restream = await create(api, job["name"])
    assert told == [job["id"]]
    live[restream["id"]] = RestreamLiveState(
        state="forwarding",
        last_error="connection reset by peer",
        connected_since=1_767_225_600.25,
        reconnects=2,
        bytes_sent=123_456,
        bitrate_bps=4_500_000,
        dropped_packets=7,
        forwarding="rendition 720p",
    )
    (row,) = await listed(api, job["name"])
    assert {k: row[k] for k in FORWARDING_FIELDS} == {
        "state": "forwarding",
        "lastError": "connection reset by peer",
        "connectedSince": "2026-01-01T00:00:00.250Z",
        "reconnects": 2,
        "bytesSent": 123_456,
        "bitrate": 4_500_000,
        "droppedPackets": 7,
        "forwarding": "rendition 720p",
    }
    assert (await call(api, "PUT", f"restreams/{restream['id']}/toggle"))[0] == 200
    assert (await call(api, "DELETE", f"restreams/{restream['id']}"))[0] == 200
    assert told == [job["id"]] * 3
    # Nothing is told of a refused change.
    assert (await call(api, "DELETE", f"restreams/{restream['id']}"))[0] == 404
    assert (await call(api, "POST", "restreams", json=body(job["name"], title="")))[0] == 400
    assert told == [job["id"]] * 3

    # A runtime that fails: the change is recorded and answered, the failure logged.
    async def failing(job_id: int) -> None:
        raise RuntimeError("runtime down")

    api.app[RESTREAMS_KEY].attach_runtime(on_change=failing)
    caplog.set_level(logging.ERROR, logger="api.restreams.service")
    restream = await create(api, job["name"])
    assert [r["id"] for r in await listed(api, job["name"])] == [restream["id"]]
    assert "the restreams' runtime failed on a change" in caplog.text


async def test_the_stream_key_is_in_no_log_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    job = await api.create_job()
    key = a_key()
    restream = await create(api, job["name"], streamKey=key)
    await listed(api, job["name"])
    assert (await call(api, "PUT", f"restreams/{restream['id']}/toggle"))[0] == 200
    for bad in ({"streamUrl": "rtmp://127.0.0.1/app"}, {"title": ""}, {"status": "no"}):
        status, answer = await call(
            api, "POST", "restreams", json=body(job["name"], streamKey=key, **bad)
        )
        assert status == 400 and key not in str(answer)
    status, answer = await call(
        api, "POST", "restreams", json=body(job["name"], streamKey=key + " x")
    )
    assert status == 400 and key not in str(answer)
    await api.app[RESTREAMS_KEY].restream_changed(
        job["id"], restream["id"], "YouTube", "RestreamErrored", f"refused key {key}"
    )
    assert (await call(api, "DELETE", f"restreams/{restream['id']}"))[0] == 200
    assert "restream" in caplog.text  # the calls were logged ...
    assert key not in caplog.text  # ... never the key
    status, timings = await api.call("GET", f"/livejobs/{job['id']}/timings?pageSize=100")
    assert status == 200
    (errored,) = [t for t in timings["result"] if t["childStatus"] == "RestreamErrored"]
    assert errored["messageComment"] == (
        f"restream {restream['id']} (YouTube): refused key <streamKey>"
    )


def test_the_openapi_document_describes_the_restreams() -> None:
    document = openapi_document(Settings(), APP_ROUTES)
    paths = document["paths"]
    operations = {
        (method, path): item[method]["operationId"]
        for path, item in paths.items()
        for method in item
        if "restream" in path
    }
    assert operations == {
        ("post", "/api/v1/{projectId}/restreams"): "createRestream",
        ("put", "/api/v1/{projectId}/restreams/{restreamId}/toggle"): "toggleRestream",
        ("delete", "/api/v1/{projectId}/restreams/{restreamId}"): "deleteRestream",
        ("get", "/api/v1/{projectId}/live-video/{videoId}/restreams"): "listLiveVideoRestreams",
    }
    create_responses = paths["/api/v1/{projectId}/restreams"]["post"]["responses"]
    assert {"201", "400", "401", "403", "404", "500"} <= set(create_responses)
    schema = document["components"]["schemas"]["Restream"]
    for field in FORWARDING_FIELDS:
        assert schema["properties"][field].get("description"), field
    assert schema["properties"]["state"]["enum"] == [
        "idle",
        "connecting",
        "forwarding",
        "reconnecting",
        "errored",
    ]
    request = document["components"]["schemas"]["NewRestream"]
    assert set(request["required"]) == {"videoId", "title", "streamUrl", "streamKey", "status"}
    assert "ONAIR_OUTBOUND_ALLOW_PRIVATE" in request["properties"]["streamUrl"]["description"]
