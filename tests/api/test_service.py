"""The service as a user runs it: `onair run`, `onair project create`, restarts, health."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from api.settings import ConfigError, load_settings
from packager.s3server import EmbeddedS3, S3Ports, connect_to_listener
from tests.support.ports import free_port_block
from tests.support.service import (
    CREATE_BODY,
    ONAIR,
    Project,
    RunningService,
    make_projects,
    make_settings,
    service_env,
    start_api,
)

pytestmark = pytest.mark.slow  # `onair run` as a child process, SeaweedFS included


def _listening(port: int) -> bool:
    connection = connect_to_listener("127.0.0.1", port)  # not a socket connected to itself
    if connection is None:
        return False
    connection.close()
    return True


def test_onair_run_serves_and_stops_seaweedfs_too(tmp_path: Path) -> None:
    """`make run`'s command: embedded S3 up, API serving, Ctrl-C leaves nothing running."""
    s3_port = free_port_block()
    service = RunningService(service_env(tmp_path, ONAIR_S3_PORT=str(s3_port)))
    try:
        project = service.wait_ready()
        health = requests.get(f"{service.base}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["result"] == {
            "store": True, "storage": True,
        }  # fmt: skip
        created = requests.post(
            f"{service.base}/api/v1/projects/{project['id']}/livejobs",
            headers={"Authorization": f"Bearer {project['key']}"},
            json=CREATE_BODY,
            timeout=5,
        )
        assert created.status_code == 201, created.text
        # The embedded S3 answers with the credentials onair generated for it.
        assert _listening(s3_port)
        assert not _listening(8080) or service.env["ONAIR_HTTP_PORT"] == "8080"
    finally:
        code = service.stop(signal.SIGINT)
    assert code == 0, "".join(service.lines)
    assert _weed_processes(tmp_path) == []
    for port in S3Ports(s3_port).all():
        assert not _listening(port), f"SeaweedFS port {port} still open after Ctrl-C"
    # The development project survives a restart with the same key.
    service = RunningService(service.env)
    try:
        assert service.wait_ready() == project
    finally:
        assert service.stop(signal.SIGTERM) == 0


@pytest.fixture
def service(tmp_path: Path, s3_server: EmbeddedS3) -> Iterator[RunningService]:
    running = RunningService(
        service_env(
            tmp_path,
            ONAIR_S3_ENDPOINT=s3_server.endpoint,
            ONAIR_S3_ACCESS_KEY=s3_server.access_key,
            ONAIR_S3_SECRET_KEY=s3_server.secret_key,
        )
    )
    running.wait_ready()
    yield running
    running.stop()


def test_project_create_then_the_api_with_that_key(service: RunningService) -> None:
    project = service.project_create("broadcaster one")
    assert set(project) == {"projectId", "apiKey", "webhookSecret"}
    assert project["webhookSecret"].startswith("whsec_")
    headers = {"x-api-key": project["apiKey"]}
    url = f"{service.base}/api/v1/projects/{project['projectId']}/livejobs"
    created = requests.post(url, headers=headers, json=CREATE_BODY, timeout=5)
    assert created.status_code == 201
    listed = requests.get(url, headers=headers, timeout=5).json()
    assert [j["key"] for j in listed["result"]] == [created.json()["result"]["key"]]
    other = service.project_create("broadcaster two")
    other_url = f"{service.base}/api/v1/projects/{other['projectId']}/livejobs"
    assert requests.get(other_url, headers=headers, timeout=5).status_code == 403


def test_project_create_refuses_an_empty_name(service: RunningService) -> None:
    done = subprocess.run(
        [ONAIR, "project", "create", " "],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0 and "name" in done.stderr


def test_bad_configuration_is_one_clear_line(tmp_path: Path) -> None:
    env = service_env(tmp_path, ONAIR_HTTP_PORT="eighty")
    done = subprocess.run(
        [ONAIR, "run"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "onair: configuration error: ONAIR_HTTP_PORT='eighty': not an integer"
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ONAIR_RTMP_PORT", "70000"),
        ("ONAIR_S3_ENDPOINT", "ftp://x"),
        ("ONAIR_RECONNECT_WINDOW_SECONDS", "-1"),
        ("ONAIR_PUBLIC_HOST", "bad host"),
        ("ONAIR_LOG_LEVEL", "loud"),
        ("ONAIR_S3_ACCESS_KEY", "only-one"),
        ("ONAIR_DVR_WINDOW_SECONDS", "0"),
        ("ONAIR_DVR_WINDOW_SECONDS", "-60"),
        ("ONAIR_DVR_WINDOW_SECONDS", "two hours"),
        ("ONAIR_DVR_WINDOW_SECONDS", "nan"),
        ("ONAIR_DVR_WINDOW_SECONDS", "inf"),
        ("ONAIR_PROXY_PROTOCOL", "maybe"),
    ],
)
def test_settings_validation_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({name: value})
    assert name in str(error.value)


def test_the_proxy_protocol_is_off_unless_set() -> None:
    assert load_settings({}).proxy_protocol is False
    assert load_settings({"ONAIR_PROXY_PROTOCOL": "true"}).proxy_protocol is True
    assert load_settings({"ONAIR_PROXY_PROTOCOL": "off"}).proxy_protocol is False


def test_the_dvr_window_defaults_to_two_hours() -> None:
    assert load_settings({}).dvr_window_seconds == 7200
    assert load_settings({"ONAIR_DVR_WINDOW_SECONDS": "600"}).dvr_window_seconds == 600


async def test_restart_keeps_jobs_and_online_state(tmp_path: Path, s3_server: EmbeddedS3) -> None:
    settings = make_settings(tmp_path, s3_server)
    project: Project = make_projects(settings.db_path, 1)[0]
    server = await start_api(settings)
    base = str(server.make_url("")).rstrip("/") + f"/api/v1/projects/{project.id}/livejobs"
    async with aiohttp.ClientSession(headers=project.headers) as session:
        async with session.post(base, json=CREATE_BODY) as r:
            job = (await r.json())["result"]
        async with session.post(f"{base}/{job['key']}", json={"online": True}) as r:
            assert r.status == 201
        await server.close()

        server = await start_api(settings)
        base = str(server.make_url("")).rstrip("/") + f"/api/v1/projects/{project.id}/livejobs"
        async with session.get(f"{base}/{job['id']}") as r:
            again = (await r.json())["result"]
        await server.close()
    assert again["key"] == job["key"] and again["name"] == job["name"]
    assert again["status"] == 2  # still online, waiting for the publisher


async def test_healthz_is_503_when_storage_does_not_answer(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    settings = make_settings(tmp_path, s3_server)
    server = await start_api(settings, storage_ping=lambda: False)
    async with aiohttp.ClientSession() as session:
        async with session.get(server.make_url("/healthz")) as r:
            body = await r.json()
    await server.close()
    assert r.status == 503
    assert body["result"] == {"store": True, "storage": False}
    assert body["errors"] == ["storage does not answer"]


def _weed_processes(tmp_path: Path) -> list[int]:
    """Pids of SeaweedFS processes serving a data dir under tmp_path."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "weed" in cmdline and str(tmp_path) in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("delay_seconds", [0.0, 0.05, 0.5, 1.5])
def test_sigterm_during_start_up_leaves_nothing_running(
    tmp_path: Path, delay_seconds: float
) -> None:
    s3_port = free_port_block()
    service = RunningService(service_env(tmp_path, ONAIR_S3_PORT=str(s3_port)))
    assert service.process.stdout is not None
    first = service.process.stdout.readline()
    assert first.startswith("starting embedded S3"), first
    time.sleep(delay_seconds)  # lands in Popen, in the readiness wait, ...
    code = service.stop(signal.SIGTERM)
    assert code == 0
    assert _weed_processes(tmp_path) == []
    for port in S3Ports(s3_port).all():
        assert not _listening(port), f"SeaweedFS port {port} still open"
