"""The URLs a job hands out: ingest, storage, DVR, CDN and playback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from packager.s3server import EmbeddedS3
from tests.support.service import CREATE_BODY, Api, running_api

CDN = "https://cdn.example.com"


@pytest.fixture
async def cdn_api(tmp_path: Path, s3_server: EmbeddedS3) -> AsyncIterator[Api]:
    async with running_api(tmp_path, s3_server, cdn_base_url=CDN) as running:
        yield running


def _input(**changes: object) -> dict[str, object]:
    return {"input": {**CREATE_BODY["input"], **changes}}


async def test_every_job_says_where_its_publisher_connects(api: Api) -> None:
    """rtmpServer without the key (OBS's Server), ingestUrl with it (ffmpeg, OBS's SRT
    Server field), for each protocol; an HLS job that pulls has neither."""
    settings = api.settings
    rtmp = await api.create_job()
    assert rtmp["rtmpServer"] == f"rtmp://127.0.0.1:{settings.rtmp_port}/live/"
    assert rtmp["ingestUrl"] == f"rtmp://127.0.0.1:{settings.rtmp_port}/live/{rtmp['key']}"
    srt = await api.create_job(**_input(serverType=1, filePath="srt", srtPassphrase="s3cret-pass"))
    assert srt["rtmpServer"] == f"srt://127.0.0.1:{settings.srt_port}"
    assert srt["ingestUrl"] == (
        f"srt://127.0.0.1:{settings.srt_port}?streamid=#!::r=live/{srt['key']},m=publish"
    )
    assert srt["input"]["srtPassphrase"] == "s3…"  # never in full
    push = await api.create_job(**_input(serverType=2, filePath="push"))
    assert push["rtmpServer"] == f"http://127.0.0.1:{settings.hls_ingest_port}/hls/"
    assert push["ingestUrl"] == (
        f"http://127.0.0.1:{settings.hls_ingest_port}/hls/{push['key']}/index.m3u8"
    )
    source = "https://origin.example.com/live/index.m3u8"
    pull = await api.create_job(**_input(serverType=2, filePath="pull", sourceUrl=source))
    assert (pull["rtmpServer"], pull["ingestUrl"]) == (None, None)
    assert pull["input"]["sourceUrl"] == source
    for job in (rtmp, srt, push, pull):
        _, body = await api.call("GET", f"/livejobs/{job['id']}")
        shown = body["result"]
        assert (shown["rtmpServer"], shown["ingestUrl"]) == (job["rtmpServer"], job["ingestUrl"])
        assert shown["backupIngestUrl"] is None
        assert "s3cret-pass" not in str(body)


async def test_srt_and_hls_input_fields_are_for_their_protocol_only(api: Api) -> None:
    cases = [
        (_input(srtPassphrase="long-enough-1"), "input.srtPassphrase", "only for SRT jobs"),
        (_input(serverType=1, srtPassphrase="short"), "input.srtPassphrase", "10 to 79"),
        (_input(serverType=1, srtPassphrase="x" * 80), "input.srtPassphrase", "10 to 79"),
        (
            _input(serverType=1, srtPassphrase="caf\u00e9-caf\u00e9-"),
            "input.srtPassphrase",
            "ASCII",
        ),
        (_input(sourceUrl="https://a.example/x.m3u8"), "input.sourceUrl", "only for HLS"),
        (_input(serverType=2, sourceUrl="ftp://a.example/x"), "input.sourceUrl", "http"),
    ]
    for changes, field, text in cases:
        status, body = await api.call("POST", "/livejobs", json={**CREATE_BODY, **changes})
        assert status == 400, (changes, body)
        assert any(e.startswith(field + ":") and text in e for e in body["errors"]), body


async def test_the_dvr_master_sits_next_to_the_master(api: Api) -> None:
    job = await api.create_job()
    storage = f"{api.settings.s3_endpoint}/onair-test/shows/news/2026/ep1"
    assert job["storageDvrMasterFile"] == f"{storage}/dvr.m3u8"
    _, body = await api.call("GET", f"/livejobs/{job['name']}")
    assert body["result"]["storageDvrMasterFile"] == f"{storage}/dvr.m3u8"
    assert body["result"]["storageMasterFile"] == f"{storage}/master.m3u8"


async def test_path_segments_are_percent_encoded(cdn_api: Api) -> None:
    file_path = "2026/ep 1 #2?é"
    job = await cdn_api.create_job(cdnDistribution=True, **_input(filePath=file_path))
    assert job["input"]["filePath"] == file_path
    encoded = "onair-test/shows/news/2026/ep%201%20%232%3F%C3%A9"
    storage = f"{cdn_api.settings.s3_endpoint}/{encoded}"
    assert job["storageMasterFile"] == f"{storage}/master.m3u8"
    assert job["storageDvrMasterFile"] == f"{storage}/dvr.m3u8"
    assert job["outputManifests"] == {
        name: f"{storage}/{name}/index.m3u8" for name in ("720p", "480p", "360p")
    }
    assert job["cdn"] == f"{CDN}/{encoded}/master.m3u8"
    for url in (job["cdn"], job["storageMasterFile"], *job["outputManifests"].values()):
        parts = urlsplit(url)
        assert parts.query == "" and parts.fragment == "", url
        assert unquote(parts.path).startswith(f"/onair-test/shows/news/{file_path}/"), url
    status, body = await cdn_api.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    assert status == 201
    assert body["result"]["playBackPathURL"] == job["cdn"]


async def test_the_playback_url_without_a_cdn_is_the_encoded_storage_master(api: Api) -> None:
    job = await api.create_job(cdnDistribution=True, **_input(filePath="a b/c#d"))
    assert job["cdn"] is None  # no CDN configured
    assert job["storageMasterFile"].endswith("/onair-test/shows/news/a%20b/c%23d/master.m3u8")
    _, body = await api.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    assert body["result"]["playBackPathURL"] == job["storageMasterFile"]


async def test_cdn_urls_of_jobs_in_different_buckets_differ(cdn_api: Api) -> None:
    first = await cdn_api.create_job(cdnDistribution=True, bucket="bucket-one")
    second = await cdn_api.create_job(cdnDistribution=True, bucket="bucket-two")
    assert first["cdn"] == f"{CDN}/bucket-one/shows/news/2026/ep1/master.m3u8"
    assert second["cdn"] == f"{CDN}/bucket-two/shows/news/2026/ep1/master.m3u8"
    plain = await cdn_api.create_job(cdnDistribution=False)
    assert plain["cdn"] is None


def test_the_websocket_url_is_wss_behind_tls_and_names_the_job_not_its_key() -> None:
    from api.present import job_urls
    from api.settings import Settings
    from encoder.templates import get_template

    job = {
        "id": 7, "name": "0b9e-name", "stream_key": "s3cret-key", "project_id": "p1",
        "destination": "live", "file_path": "show", "bucket": "b", "server_type": 0,
        "input_class": 0, "source_url": None, "cdn_distribution": 0,
    }  # fmt: skip
    plain = job_urls(Settings(public_host="live.example.com", http_port=8080), job, get_template(2))
    assert plain["web_socket_connection"] == "ws://live.example.com:8080/websocketplay/0b9e-name"
    behind_tls = Settings(public_url="https://live.example.com/")
    url = job_urls(behind_tls, job, get_template(2))["web_socket_connection"]
    assert url == "wss://live.example.com/websocketplay/0b9e-name"
    assert "s3cret-key" not in url
