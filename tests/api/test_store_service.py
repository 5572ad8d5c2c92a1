"""The whole control API on PostgreSQL: ONAIR_DATABASE_URL set, `onair project create`
and the service share one database, nothing is written to a SQLite file, the URL's
password is never logged."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import make_url

from api import cli
from api.settings import DOCUMENTED, ConfigError, load_settings
from packager.s3server import EmbeddedS3
from tests.support.service import CREATE_BODY, Project, elsewhere, make_settings, start_api

pytestmark = pytest.mark.slow  # the API started twice


async def test_the_api_runs_on_postgresql(
    tmp_path: Path,
    s3_server: EmbeddedS3,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = make_url(postgres_url).password
    assert password
    settings = make_settings(
        tmp_path,
        s3_server,
        database_url=load_settings({"ONAIR_DATABASE_URL": postgres_url}).database_url,
    )
    assert settings.database_url == postgres_url
    monkeypatch.setenv("ONAIR_DATABASE_URL", postgres_url)
    monkeypatch.setenv("ONAIR_DATA_DIR", str(settings.data_dir))
    projects = []
    for name in ("tenant-a", "tenant-b"):
        assert await asyncio.to_thread(cli.main, ["project", "create", name]) == 0
        created = json.loads(capsys.readouterr().out)
        projects.append(Project(created["projectId"], created["apiKey"]))
    a, b = projects

    server = await start_api(settings)
    root = str(server.make_url("")).rstrip("/")

    def jobs_url(project: Project, path: str = "") -> str:
        return f"{root}/api/v1/projects/{project.id}/livejobs{path}"

    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{root}/healthz") as r:
                assert r.status == 200 and (await r.json())["result"]["store"] is True
            created = []
            for index in range(3):
                body = {**CREATE_BODY, **elsewhere(f"2026/ep{index}")}
                async with session.post(jobs_url(a), json=body, headers=a.headers) as r:
                    assert r.status == 201, await r.text()
                    created.append((await r.json())["result"])
            # B is refused A's bucket, through the same database.
            async with session.post(jobs_url(b), json=CREATE_BODY, headers=b.headers) as r:
                assert r.status == 400
                assert (await r.json())["errors"] == ["bucket: owned by another project"]
            async with session.get(jobs_url(a, "?search=ep1"), headers=a.headers) as r:
                listed = await r.json()
            assert [j["id"] for j in listed["result"]] == [created[1]["id"]]
            async with session.get(jobs_url(a), headers=a.headers) as r:
                listed = await r.json()
            assert listed["resultInfo"]["totalCount"] == 3
            assert [j["id"] for j in listed["result"]] == [j["id"] for j in created][::-1]

            first, second = created[0], created[1]
            for job, online in ((first, True), (second, True), (second, False)):
                async with session.post(
                    jobs_url(a, f"/{job['key']}"), json={"online": online}, headers=a.headers
                ) as r:
                    assert r.status == 201, await r.text()
            async with session.get(jobs_url(a, f"/{second['id']}/timings"), headers=a.headers) as r:
                timings = [t["childStatus"] for t in (await r.json())["result"]]
            assert timings == ["Created", "WentOnline", "WentOffline"]
    finally:
        await server.close()

    # A restart finds it all in PostgreSQL: the online job waits for its publisher again.
    server = await start_api(settings)
    root = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(jobs_url(a, f"/{first['id']}"), headers=a.headers) as r:
                again = (await r.json())["result"]
            async with session.get(jobs_url(a, f"/{second['id']}"), headers=a.headers) as r:
                offline = (await r.json())["result"]
    finally:
        await server.close()
    assert (again["key"], again["status"]) == (first["key"], 2)
    assert offline["status"] == 1
    assert not settings.db_path.exists()  # no SQLite store beside
    assert "PostgreSQL at postgresql://onair:***@" in caplog.text
    assert password not in caplog.text and password not in repr(settings)


def test_onair_database_url_is_read_and_checked_without_showing_the_password() -> None:
    assert load_settings({}).database_url is None
    url = "postgresql://onair:s3cret@db.internal:5432/onair"
    assert load_settings({"ONAIR_DATABASE_URL": url}).database_url == url
    for wrong in (
        "mysql://onair:s3cret@db/onair",
        "sqlite:////var/lib/onair.sqlite3",
        "postgresql://onair:s3cret@db.internal:5432",
        "not a url s3cret",
    ):
        with pytest.raises(ConfigError) as error:
            load_settings({"ONAIR_DATABASE_URL": wrong})
        assert "ONAIR_DATABASE_URL" in str(error.value) and "s3cret" not in str(error.value)
    assert "DATABASE_URL" in DOCUMENTED
