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


async def test_only_rtmp_jobs_have_an_rtmp_server(api: Api) -> None:
    rtmp = await api.create_job()
    assert rtmp["rtmpServer"] == f"rtmp://127.0.0.1:{api.settings.rtmp_port}/live/"
    for server_type in (1, 2):  # SRT, HLS: no ingest yet, so nowhere to connect
        job = await api.create_job(**_input(serverType=server_type, filePath=f"t{server_type}"))
        assert job["rtmpServer"] is None, server_type
        _, body = await api.call("GET", f"/livejobs/{job['id']}")
        assert body["result"]["rtmpServer"] is None
        assert body["result"]["input"]["serverType"] == server_type
    _, body = await api.call("GET", f"/livejobs/{rtmp['id']}")
    assert body["result"]["rtmpServer"] == f"rtmp://127.0.0.1:{api.settings.rtmp_port}/live/"


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
