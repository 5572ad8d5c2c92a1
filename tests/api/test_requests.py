"""What a request may carry: the key's header forms, ids, bodies; and what logs never show."""

from __future__ import annotations

import logging
import uuid

import pytest

from api.views import LIVE_JOBS_KEY
from tests.support.service import Api


async def test_authorization_carries_the_raw_key_or_a_bearer_key(api: Api) -> None:
    key = api.project.key
    for headers in (
        {"Authorization": key},
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"bearer  {key} "},
        {"x-api-key": key},
    ):
        status, body = await api.call("GET", "/livejobs", headers=headers)
        assert status == 200, (headers, body)
    for headers in (
        {"Authorization": f"{key}x"},  # a wrong raw key
        {"Authorization": f"Basic {key}"},  # another scheme is not a key with a space
        {"Authorization": "Basic xyz"},
        {"Authorization": f"{key} {key}"},
        {"Authorization": f"Bearer {key} extra"},
    ):
        status, body = await api.call("GET", "/livejobs", headers=headers)
        assert status == 401, headers
        assert body["success"] is False and body["errors"]


# Superscripts pass str.isdigit() but not int(); Arabic-Indic and mathematical digits
# pass both (int("\u0661") == 1).
NON_ASCII_DIGITS = ["\u00b2", "\u00b9", "\u0661", "\U0001d7cf", "1\u00b2"]


@pytest.mark.parametrize("ref", NON_ASCII_DIGITS)
async def test_an_id_of_non_ascii_digits_is_404(api: Api, ref: str) -> None:
    await api.create_job()  # job 1 exists: no non-ASCII "1" may find it
    for suffix in ("", "/timings", "/stats", "/events"):
        status, body = await api.call("GET", f"/livejobs/{ref}{suffix}")
        assert status == 404, (ref, suffix, body)
        assert body["statusCode"] == 404 and body["errors"]


@pytest.mark.parametrize("value", NON_ASCII_DIGITS)
async def test_a_query_id_of_non_ascii_digits_is_400_naming_the_field(api: Api, value: str) -> None:
    job = await api.create_job()
    status, body = await api.call("GET", f"/livejobs/outputs?liveJobId={value}")
    assert status == 400, body
    assert body["errors"][0].startswith("liveJobId:")
    status, body = await api.call("GET", f"/livejobs/{job['id']}/timings?outputId={value}")
    assert status == 400, body
    assert body["errors"][0].startswith("outputId:")
    status, body = await api.call("GET", f"/livejobs?pageIndex={value}")
    assert status == 400 and body["errors"][0].startswith("pageIndex:")


async def test_deeply_nested_json_is_400(api: Api) -> None:
    job = await api.create_job()
    for data in ("[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000):
        for path in ("/livejobs", f"/livejobs/{job['key']}"):
            status, body = await api.call("POST", path, data=data)
            assert status == 400, (path, body)
            assert len(body["errors"]) == 1 and body["errors"][0].startswith("body:")
    # The job is untouched and the API still answers.
    status, body = await api.call("GET", f"/livejobs/{job['id']}")
    assert status == 200 and body["result"]["online"] is False


async def test_no_log_line_carries_a_stream_key(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    job = await api.create_job()
    key = job["key"]
    unknown = str(uuid.uuid4())

    # An unknown key: 404, and the answer does not echo it.
    status, body = await api.call("POST", f"/livejobs/{unknown}", json={"online": True})
    assert status == 404
    assert body["errors"] == ["live job not found"]

    # The toggle fails unexpectedly: 500, and the error log names the route.
    async def fail(*args: object) -> None:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(api.app[LIVE_JOBS_KEY], "set_online", fail)
    status, body = await api.call("POST", f"/livejobs/{key}", json={"online": True})
    assert status == 500 and body["errors"] == ["internal server error"]
    status, _ = await api.call("POST", f"/livejobs/{key}", data="[" * 100_000)
    assert status == 400
    monkeypatch.undo()

    # And the normal path: online, then offline.
    for online in (True, False):
        status, _ = await api.call("POST", f"/livejobs/{key}", json={"online": online})
        assert status == 201

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "unhandled error on POST /api/v{version}/projects/{projectId}/livejobs/{id}"
    ]
    assert any(r.name == "aiohttp.access" for r in caplog.records)  # requests were logged
    for record in caplog.records:
        assert key not in record.getMessage(), record.getMessage()
        assert unknown not in record.getMessage(), record.getMessage()
    assert key not in caplog.text and unknown not in caplog.text  # tracebacks included
