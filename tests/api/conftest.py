"""Fixtures for the control API: a running app on a real socket, projects and keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from api.app import RouteAccessLogger, create_app
from api.cli import create_project
from api.database import Database
from api.settings import Settings, load_settings
from packager.s3server import EmbeddedS3
from tests.conftest import free_port

CREATE_BODY: dict[str, Any] = {
    "jobTemplateId": 2,
    "destination": "shows/news",
    "description": "evening news",
    "bucket": "onair-test",
    "cdnDistribution": False,
    "input": {"filePath": "2026/ep1", "serverType": 0, "inputClass": 0},
}


def elsewhere(file_path: str) -> dict[str, Any]:
    """Create-body changes that put a job at another place of the bucket (no two jobs
    may share an output prefix)."""
    return {"input": {**CREATE_BODY["input"], "filePath": file_path}}


@dataclass
class Project:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Api:
    base: str
    session: aiohttp.ClientSession
    settings: Settings
    projects: list[Project]
    app: web.Application  # the running app: its LiveJobs is app[LIVE_JOBS_KEY]

    @property
    def project(self) -> Project:
        return self.projects[0]

    @property
    def other(self) -> Project:
        return self.projects[1]

    def url(self, path: str, project: Project | None = None) -> str:
        project = project or self.project
        return f"{self.base}/api/v1/projects/{project.id}{path}"

    async def call(
        self, method: str, path: str, project: Project | None = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        project = project or self.project
        headers = kwargs.pop("headers", project.headers)
        async with self.session.request(
            method, self.url(path, project), headers=headers, **kwargs
        ) as response:
            return response.status, await response.json()

    async def create_job(self, project: Project | None = None, **changes: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/livejobs", project, json={**CREATE_BODY, **changes}
        )
        assert status == 201, body
        return body["result"]


def make_projects(db_path: Path, count: int) -> list[Project]:
    database = Database(db_path)
    try:
        return [
            Project(**{"id": p["projectId"], "key": p["apiKey"]})
            for p in (create_project(database, f"p{i}") for i in range(count))
        ]
    finally:
        database.close()


def test_settings(tmp_path: Path, s3_server: EmbeddedS3, **overrides: Any) -> Settings:
    """Settings on the test S3; the RTMP ingest (the app is the whole service) on a free
    loopback port unless `overrides` say otherwise."""
    return load_settings(
        {},
        **{
            "data_dir": tmp_path / "data",
            "s3_endpoint": s3_server.endpoint,
            "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key,
            "rtmp_host": "127.0.0.1",
            "rtmp_port": free_port(),
            **overrides,
        },
    )


test_settings.__test__ = False  # type: ignore[attr-defined]


async def start_api(
    settings: Settings, storage_ping: Callable[[], bool] = lambda: True
) -> TestServer:
    # The access log as `onair run` would write it, were it on: routes, not paths.
    server = TestServer(create_app(settings, storage_ping=storage_ping), host="127.0.0.1")
    await server.start_server(access_log_class=RouteAccessLogger)
    return server


@asynccontextmanager
async def running_api(
    tmp_path: Path, s3_server: EmbeddedS3, **overrides: Any
) -> AsyncIterator[Api]:
    """The API on a real socket, with two projects; `overrides` change settings."""
    settings = test_settings(tmp_path, s3_server, **overrides)
    projects = make_projects(settings.db_path, 2)
    server = await start_api(settings)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(str(server.make_url("")).rstrip("/"), session, settings, projects, server.app)
    finally:
        await server.close()


@pytest.fixture
async def api(tmp_path: Path, s3_server: EmbeddedS3) -> AsyncIterator[Api]:
    async with running_api(tmp_path, s3_server) as running:
        yield running
