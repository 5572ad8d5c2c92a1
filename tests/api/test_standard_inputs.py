"""Standard input class, the API's side: a job's failover fields (inputLossThresholdMs,
inputPreference, failbackAfterSeconds, backupSourceUrl), checked and shown with their
defaults; where a backup publisher connects (backupIngestUrl); the settings of what
the outputs carry once the input is lost."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from api.present import BACKUP_APP, HLS_BACKUP_APP
from api.settings import DOCUMENTED, ConfigError, Settings, load_settings
from api.webhooks.events import EVENT_TYPES, INPUT_FAILOVER_EVENT
from tests.support.service import CREATE_BODY, Api

SOURCE = "https://origin.example.com/live/index.m3u8"
BACKUP_SOURCE = "https://backup.example.com/live/index.m3u8"
FAILOVER_FIELDS = (
    "inputLossThresholdMs",
    "inputPreference",
    "failbackAfterSeconds",
    "backupSourceUrl",
)


def _input(**changes: object) -> dict[str, Any]:
    return {"input": {**CREATE_BODY["input"], **changes}}


def _pull(**changes: object) -> dict[str, Any]:
    """A Standard HLS pull job's input."""
    return _input(**{"serverType": 2, "inputClass": 1, "sourceUrl": SOURCE, **changes})


async def _refused(api: Api, body: dict[str, Any], field: str, text: str) -> None:
    status, answer = await api.call("POST", "/livejobs", json={**CREATE_BODY, **body})
    assert status == 400, (body, answer)
    assert answer["errors"] == [e for e in answer["errors"] if e.startswith(field + ":")]
    assert any(text in e for e in answer["errors"]), answer


# -- the job's fields ----------------------------------------------------------------------


async def test_a_new_job_shows_the_failover_defaults_in_its_input(api: Api) -> None:
    job = await api.create_job()
    _, body = await api.call("GET", f"/livejobs/{job['id']}")
    for shown in (job["input"], body["result"]["input"]):
        assert {name: shown[name] for name in FAILOVER_FIELDS} == {
            "inputLossThresholdMs": 1000,
            "inputPreference": "primary",
            "failbackAfterSeconds": 30,
            "backupSourceUrl": None,
        }


async def test_the_failover_fields_are_kept_nested_or_at_top_level(api: Api) -> None:
    chosen: dict[str, Any] = {
        "inputLossThresholdMs": 250,
        "inputPreference": "equal",
        "failbackAfterSeconds": 2.5,
    }
    nested = await api.create_job(**_input(filePath="nested", inputClass=1, **chosen))
    flat = await api.create_job(**_input(filePath="flat", inputClass=1), **chosen)
    pull = await api.create_job(**_pull(filePath="pull", backupSourceUrl=BACKUP_SOURCE))
    for job in (nested, flat):
        _, body = await api.call("GET", f"/livejobs/{job['name']}")
        assert {name: body["result"]["input"][name] for name in chosen} == chosen
    assert pull["input"]["sourceUrl"] == SOURCE
    assert pull["input"]["backupSourceUrl"] == BACKUP_SOURCE
    # null means the default, as if absent
    defaults = await api.create_job(
        **_input(filePath="nulls", inputLossThresholdMs=None, inputPreference=None),
        failbackAfterSeconds=None,
    )
    assert [defaults["input"][n] for n in FAILOVER_FIELDS[:3]] == [1000, "primary", 30]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (99, "at least 100"),
        (60001, "at most 60000"),
        (1000.0, "must be an integer"),
        ("1000", "must be an integer"),
        (True, "must be an integer"),
    ],
)
async def test_a_bad_input_loss_threshold_is_refused(api: Api, value: object, text: str) -> None:
    await _refused(api, _input(inputLossThresholdMs=value), "input.inputLossThresholdMs", text)
    await _refused(api, {"inputLossThresholdMs": value}, "input.inputLossThresholdMs", text)


@pytest.mark.parametrize("value", ["Primary", "backup", "", 1])
async def test_a_bad_input_preference_is_refused(api: Api, value: object) -> None:
    text = "must be one of primary, equal" if isinstance(value, str) else "must be a string"
    await _refused(api, _input(inputPreference=value), "input.inputPreference", text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "at least 1"),
        (3600.5, "at most 3600"),
        ("30", "must be a number"),
        (False, "must be a number"),
    ],
)
async def test_a_bad_failback_delay_is_refused(api: Api, value: object, text: str) -> None:
    await _refused(api, _input(failbackAfterSeconds=value), "input.failbackAfterSeconds", text)


async def test_failback_bounds_are_inclusive(api: Api) -> None:
    low = await api.create_job(**_input(filePath="low", failbackAfterSeconds=1))
    high = await api.create_job(
        **_input(filePath="high", failbackAfterSeconds=3600, inputLossThresholdMs=60000)
    )
    assert low["input"]["failbackAfterSeconds"] == 1
    assert (high["input"]["failbackAfterSeconds"], high["input"]["inputLossThresholdMs"]) == (
        3600,
        60000,
    )


async def test_a_backup_source_is_for_standard_hls_pull_jobs_only(api: Api) -> None:
    field = "input.backupSourceUrl"
    cases = [
        (_input(backupSourceUrl=BACKUP_SOURCE), "only for HLS pull jobs"),
        (_input(inputClass=1, backupSourceUrl=BACKUP_SOURCE), "only for HLS pull jobs"),
        (_input(serverType=2, inputClass=1, backupSourceUrl=BACKUP_SOURCE), "with sourceUrl"),
        (
            _input(serverType=2, sourceUrl=SOURCE, backupSourceUrl=BACKUP_SOURCE),
            "Standard input class (inputClass 1)",
        ),
        (_pull(backupSourceUrl="ftp://backup.example.com/x"), "http:// or https://"),
        (_pull(backupSourceUrl="https:///no-host"), "with a host"),
        (_pull(backupSourceUrl=7), "must be a string"),
    ]
    for body, text in cases:
        await _refused(api, body, field, text)
    # at top level too
    await _refused(api, {"backupSourceUrl": BACKUP_SOURCE}, field, "only for HLS pull jobs")


async def test_a_backup_source_is_checked_like_the_source(api: Api) -> None:
    """The same outbound check as sourceUrl: what the guard never opens is refused at once."""
    for url in ("http://127.1/index.m3u8", "https://a@b@c.example/x.m3u8"):
        _, source = await api.call(
            "POST", "/livejobs", json={**CREATE_BODY, **_pull(sourceUrl=url)}
        )
        _, backup = await api.call(
            "POST", "/livejobs", json={**CREATE_BODY, **_pull(backupSourceUrl=url)}
        )
        assert source["errors"], url
        assert backup["errors"] == [
            e.replace("input.sourceUrl", "input.backupSourceUrl") for e in source["errors"]
        ]


# -- where the backup publisher connects -------------------------------------------------


async def test_a_standard_job_says_where_its_backup_publisher_connects(api: Api) -> None:
    settings = api.settings
    rtmp = await api.create_job(**_input(filePath="rtmp", inputClass=1))
    srt = await api.create_job(**_input(filePath="srt", serverType=1, inputClass=1))
    push = await api.create_job(**_input(filePath="push", serverType=2, inputClass=1))
    pull = await api.create_job(**_pull(filePath="pull", backupSourceUrl=BACKUP_SOURCE))
    port = {"rtmp": settings.rtmp_port, "srt": settings.srt_port, "hls": settings.hls_ingest_port}
    expected = {
        rtmp["id"]: f"rtmp://127.0.0.1:{port['rtmp']}/{BACKUP_APP}/{rtmp['key']}",
        srt["id"]: (
            f"srt://127.0.0.1:{port['srt']}?streamid=#!::r={BACKUP_APP}/{srt['key']},m=publish"
        ),
        push["id"]: f"http://127.0.0.1:{port['hls']}/{HLS_BACKUP_APP}/{push['key']}/index.m3u8",
        pull["id"]: None,  # onair pulls input.backupSourceUrl
    }
    assert (BACKUP_APP, HLS_BACKUP_APP) == ("backup", "hls-backup")
    for job in (rtmp, srt, push, pull):
        _, body = await api.call("GET", f"/livejobs/{job['id']}")
        assert job["backupIngestUrl"] == body["result"]["backupIngestUrl"] == expected[job["id"]]
    # the primary's URLs are those of a Single job
    assert rtmp["ingestUrl"] == f"rtmp://127.0.0.1:{port['rtmp']}/live/{rtmp['key']}"
    assert srt["ingestUrl"] == (
        f"srt://127.0.0.1:{port['srt']}?streamid=#!::r=live/{srt['key']},m=publish"
    )
    assert push["ingestUrl"] == f"http://127.0.0.1:{port['hls']}/hls/{push['key']}/index.m3u8"
    assert (pull["rtmpServer"], pull["ingestUrl"]) == (None, None)


async def test_a_single_job_has_no_backup_ingest_url(api: Api) -> None:
    jobs = [
        await api.create_job(**_input(filePath="rtmp")),
        await api.create_job(**_input(filePath="srt", serverType=1)),
        await api.create_job(**_input(filePath="push", serverType=2)),
        await api.create_job(**_input(filePath="pull", serverType=2, sourceUrl=SOURCE)),
    ]
    assert [job["backupIngestUrl"] for job in jobs] == [None] * 4
    assert all(job["ingestUrl"] for job in jobs[:3])


# -- the document ---------------------------------------------------------------------------


async def test_the_openapi_document_describes_the_failover_fields(api: Api) -> None:
    async with api.session.get(f"{api.base}/api/openapi.json") as response:
        document = await response.json()
    schemas = document["components"]["schemas"]
    view = next(s for name, s in schemas.items() if name.startswith("LiveJobInputView"))
    for name in FAILOVER_FIELDS:
        assert view["properties"][name]["description"], name
    assert view["properties"]["inputPreference"]["enum"] == ["primary", "equal"]
    job = next(s for name, s in schemas.items() if name == "LiveJob")
    assert "/backup/{key}" in job["properties"]["backupIngestUrl"]["description"]
    assert INPUT_FAILOVER_EVENT in EVENT_TYPES
    text = str(document)
    assert "inputLossThresholdMs" in text and "backupSourceUrl" in text


# -- settings ------------------------------------------------------------------------------


def test_the_input_loss_settings_default_and_parse(tmp_path: Path) -> None:
    defaults = load_settings({})
    assert (defaults.input_loss_repeat_ms, defaults.input_slate_image) == (1000, None)
    image = tmp_path / "slate.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    settings = load_settings(
        {"ONAIR_INPUT_LOSS_REPEAT_MS": "0", "ONAIR_INPUT_SLATE_IMAGE": str(image)}
    )
    assert (settings.input_loss_repeat_ms, settings.input_slate_image) == (0, image)
    assert isinstance(settings, Settings)
    assert {"INPUT_LOSS_REPEAT_MS", "INPUT_SLATE_IMAGE"} <= set(DOCUMENTED)


@pytest.mark.parametrize(
    ("environ", "text"),
    [
        ({"ONAIR_INPUT_LOSS_REPEAT_MS": "-1"}, "ONAIR_INPUT_LOSS_REPEAT_MS='-1': must be 0"),
        ({"ONAIR_INPUT_LOSS_REPEAT_MS": "1.5"}, "ONAIR_INPUT_LOSS_REPEAT_MS='1.5': not an int"),
        ({"ONAIR_INPUT_SLATE_IMAGE": "/nonexistent/slate.png"}, "ONAIR_INPUT_SLATE_IMAGE="),
    ],
)
def test_bad_input_loss_settings_stop_the_start(environ: dict[str, str], text: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(text)):
        load_settings(environ)
