"""Webhooks through the running service: a local receiver verifies every request with
`standardwebhooks`; the deliveries endpoint shows each attempt; the outbound guard
refuses private addresses (without ONAIR_OUTBOUND_ALLOW_PRIVATE) and redirects are not
followed; the CLI prints and rotates the secret."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.cli import DEV_PROJECT_FILE, dev_project, dev_project_banner, rotate_webhook_secret
from api.database import Database
from api.database.store import unix_of, utc_at
from api.settings import Settings
from media.outbound import OutboundPolicy
from packager.s3server import EmbeddedS3
from tests.support.ports import free_port
from tests.support.service import CREATE_BODY, ONAIR, Api, Project, running_api
from tests.support.webhooks import Receiver, project_secret, verify

FAST = {"webhook_retry_initial_seconds": 0.2}
PRIVATE_ALLOWED = OutboundPolicy(allow_private=True)


@pytest.fixture
async def hooked(tmp_path: Path, s3_server: EmbeddedS3) -> AsyncIterator[Api]:
    async with running_api(tmp_path, s3_server, outbound=PRIVATE_ALLOWED, **FAST) as api:
        yield api


async def receiver_for(api: Api, project: Project | None = None, **options: Any) -> Receiver:
    secret = project_secret(api.settings.db_path, (project or api.project).id)
    receiver = Receiver([secret], **options)
    await receiver.start()
    return receiver


async def job_calling(api: Api, url: str, path: str = "2026/hooked", **kw: Any) -> dict[str, Any]:
    project = kw.get("project")
    return await api.create_job(
        project,
        input={**CREATE_BODY["input"], "filePath": path, "callbackUrl": url},
        **({"bucket": "onair-other"} if project is not None else {}),
    )


async def toggle(
    api: Api, job: dict[str, Any], online: bool, project: Project | None = None
) -> None:
    status, body = await api.call(
        "POST", f"/livejobs/{job['key']}", project, json={"online": online}
    )
    assert status == 201, body


async def deliveries(
    api: Api, query: str = "", project: Project | None = None, as_project: Project | None = None
) -> tuple[int, dict[str, Any]]:
    project = project or api.project
    url = f"{api.base}/api/v1/{project.id}/webhooks/deliveries{query}"
    async with api.session.get(url, headers=(as_project or project).headers) as response:
        return response.status, await response.json()


async def wait_delivery(api: Api, job: dict[str, Any], done: Any, within: float = 20) -> list[Any]:
    """The job's deliveries (newest first), once `done(rows)` holds."""
    deadline = time.monotonic() + within
    while True:
        status, body = await deliveries(api, f"?liveJobId={job['id']}&pageSize=100")
        assert status == 200, body
        if done(body["result"]):
            return list(body["result"])
        assert time.monotonic() < deadline, body["result"]
        await asyncio.sleep(0.1)


async def test_a_jobs_events_arrive_in_order_signed_and_show_as_delivered(hooked: Api) -> None:
    receiver = await receiver_for(hooked)
    try:
        job = await job_calling(hooked, receiver.url)
        for online in (True, False, True, False):
            await toggle(hooked, job, online)
        got = await receiver.wait_for(4)
    finally:
        await receiver.stop()
    assert receiver.rejected == []
    assert [r.type for r in got] == ["livejob.online", "livejob.offline"] * 2
    first = got[0].payload
    assert first["data"] == {
        "liveJobId": job["id"],
        "name": job["name"],
        "status": 2,
        "statusName": "Processing",
        "previousStatus": 1,
        "previousStatusName": "Offline",
        "reason": "WentOnline",
        "message": "job online: waiting for the publisher",
    }
    assert first["timestamp"].endswith("Z")
    assert job["key"] not in json.dumps([r.payload for r in got])
    assert all(r.headers["webhook-id"].startswith("msg_") for r in got)
    assert all(r.headers["user-agent"].startswith("onair-webhooks/") for r in got)
    rows = await wait_delivery(hooked, job, lambda rows: len(rows) == 4)
    assert [r["id"] for r in rows[::-1]] == [r.webhook_id for r in got]
    for row in rows:
        assert (row["state"], row["attempts"], row["lastStatusCode"]) == ("delivered", 1, 200)
        assert row["deliveredAt"] and row["nextAttemptAt"] is None and row["lastError"] is None
        assert [a["statusCode"] for a in row["attemptLog"]] == [200]


async def test_a_receiver_answering_500_is_retried_and_every_attempt_is_visible(
    hooked: Api,
) -> None:
    receiver = await receiver_for(hooked, status=500)
    try:
        job = await job_calling(hooked, receiver.url)
        await toggle(hooked, job, True)
        await toggle(hooked, job, False)
        rows = await wait_delivery(hooked, job, lambda rows: rows and rows[-1]["attempts"] >= 3)
        assert [r.type for r in receiver.unique()] == ["livejob.online"]  # the next waits
        oldest = rows[-1]
        assert (oldest["state"], oldest["lastStatusCode"]) == ("pending", 500)
        assert "HTTP 500 Internal Server Error" in oldest["lastError"]
        assert oldest["nextAttemptAt"] is not None
        assert all(a["statusCode"] == 500 for a in oldest["attemptLog"])
        # the same webhook-id on every attempt: the receiver dedupes
        assert len(receiver.received) >= 3 and len(receiver.unique()) == 1
        receiver.status = 200
        got = await receiver.wait_for(2)
    finally:
        await receiver.stop()
    assert [r.type for r in got] == ["livejob.online", "livejob.offline"]


async def test_the_deliveries_endpoint_pages_and_keeps_to_its_project(hooked: Api) -> None:
    receiver = await receiver_for(hooked)
    try:
        job = await job_calling(hooked, receiver.url)
        theirs = await job_calling(hooked, receiver.url, "2026/theirs", project=hooked.other)
        await toggle(hooked, job, True)
        await toggle(hooked, job, False)
        await toggle(hooked, theirs, True, hooked.other)
        await wait_delivery(hooked, job, lambda rows: len(rows) == 2)
    finally:
        await receiver.stop()
    status, body = await deliveries(hooked, "?pageSize=1")
    assert status == 200 and len(body["result"]) == 1
    assert body["resultInfo"] == {
        "totalCount": 2,
        "pageIndex": 1,
        "pageSize": 1,
        "totalPages": 2,
        "hasNextPage": True,
        "hasPreviousPage": False,
    }
    assert body["result"][0]["type"] == "livejob.offline"  # newest first
    _, second = await deliveries(hooked, "?pageSize=1&pageIndex=2")
    assert second["result"][0]["type"] == "livejob.online"
    # Another project's job: not found here; another project's path: forbidden.
    status, body = await deliveries(hooked, f"?liveJobId={theirs['id']}")
    assert (status, body["errors"]) == (404, body["errors"]) and body["errors"]
    assert (await deliveries(hooked, "?liveJobId=999999"))[0] == 404
    assert (await deliveries(hooked, project=hooked.other, as_project=hooked.project))[0] == 403
    status, body = await deliveries(hooked, project=hooked.other)
    assert status == 200 and [r["liveJobId"] for r in body["result"]] == [theirs["id"]]
    status, body = await deliveries(hooked, "?liveJobId=abc")
    assert status == 400 and body["errors"] == ["liveJobId: must be an integer"]


async def test_a_callback_to_a_private_address_is_refused_without_the_setting(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    async with running_api(tmp_path, s3_server, **FAST) as api:  # the default policy
        receiver = await receiver_for(api)
        try:
            job = await job_calling(api, receiver.url)
            await toggle(api, job, True)
            rows = await wait_delivery(api, job, lambda rows: rows and rows[0]["attempts"] >= 2)
        finally:
            await receiver.stop()
    assert receiver.hits == 0
    row = rows[0]
    assert row["state"] == "pending" and row["lastStatusCode"] is None
    assert "refused" in row["lastError"] and "127.0.0.1 is a loopback address" in row["lastError"]
    assert "t0ken" not in row["lastError"]  # never the URL's query
    assert all("refused" in a["error"] for a in row["attemptLog"])


async def test_a_redirect_to_a_private_address_is_not_followed(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    # 127.0.0.2 is trusted as if it were public; 127.0.0.1 is not.
    policy = OutboundPolicy(trusted_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    async with running_api(tmp_path, s3_server, outbound=policy, **FAST) as api:
        private = await receiver_for(api)
        public = await receiver_for(api, host="127.0.0.2", redirect_to=private.url)
        try:
            job = await job_calling(api, public.url)
            await toggle(api, job, True)
            rows = await wait_delivery(api, job, lambda rows: rows and rows[0]["attempts"] >= 2)
        finally:
            await public.stop()
            await private.stop()
    assert public.hits >= 2 and private.hits == 0
    row = rows[0]
    assert (row["state"], row["lastStatusCode"]) == ("pending", 301)
    assert f"redirect to http://127.0.0.1:{private.port} not followed" in row["lastError"]


async def test_after_a_rotation_both_secrets_sign_until_the_grace_ends(hooked: Api) -> None:
    old = project_secret(hooked.settings.db_path, hooked.project.id)
    receiver = Receiver([old])
    await receiver.start()
    try:
        job = await job_calling(hooked, receiver.url)
        database = Database(hooked.settings.db_path)
        try:
            rotated = rotate_webhook_secret(database, hooked.project.id, 1.0, time.time())
        finally:
            database.close()
        assert rotated is not None
        await toggle(hooked, job, True)
        (got,) = await receiver.wait_for(1)
    finally:
        await receiver.stop()
    new = rotated["webhookSecret"]
    assert new != old and len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify(old, got.body, got.headers) and verify(new, got.body, got.headers)


@pytest.mark.slow  # waits out the 5 s timeout in real time
async def test_a_receiver_slower_than_5_s_is_a_timeout_tried_again(hooked: Api) -> None:
    receiver = await receiver_for(hooked, delay_seconds=8.0)
    try:
        job = await job_calling(hooked, receiver.url)
        await toggle(hooked, job, True)
        started = time.monotonic()
        rows = await wait_delivery(hooked, job, lambda rows: rows and rows[0]["attempts"] >= 1)
        took = time.monotonic() - started
        async with hooked.session.get(f"{hooked.base}/metrics") as response:
            metrics = await response.text()
    finally:
        await receiver.stop()
    row = rows[0]
    assert row["state"] == "pending" and row["lastStatusCode"] is None
    assert "no answer within 5 s" in row["lastError"]
    assert 4.5 <= row["attemptLog"][0]["durationMs"] / 1000 < 7 and took < 10
    assert 'onair_webhook_attempts_total{outcome="timeout"} 1.0' in metrics


@pytest.mark.slow  # real time or subprocesses: left out of make test-fast
async def test_jobs_are_delivered_side_by_side_at_most_16_at_once(hooked: Api) -> None:
    receiver = await receiver_for(hooked, delay_seconds=3.0)  # the toggles are done meanwhile
    try:
        jobs = [await job_calling(hooked, receiver.url, f"2026/many{n}") for n in range(20)]
        for job in jobs:
            await toggle(hooked, job, True)
        await receiver.wait_for(20)
    finally:
        await receiver.stop()
    assert receiver.most_in_flight == 16  # one slow receiver does not serialize the jobs
    assert sorted(r.payload["data"]["liveJobId"] for r in receiver.unique()) == sorted(
        j["id"] for j in jobs
    )


async def test_a_callback_url_the_guard_cannot_open_is_refused_at_create(hooked: Api) -> None:
    for url in ("http://2130706433/hook", "http://127.1/hook", "ftp://hooks.example.com/x"):
        status, body = await hooked.call(
            "POST",
            "/livejobs",
            json={**CREATE_BODY, "input": {**CREATE_BODY["input"], "callbackUrl": url}},
        )
        assert status == 400, url
        assert [e.split(":")[0] for e in body["errors"]] == ["input.callbackUrl"], url


def test_the_dev_project_shows_its_webhook_secret_as_the_store_has_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    database = Database.for_settings(settings)
    try:
        project = dev_project(settings, database)
        assert project["webhookSecret"] == project_secret(settings.db_path, project["projectId"])
        rotated = rotate_webhook_secret(database, project["projectId"], 1.0, time.time())
        assert rotated is not None
        again = dev_project(settings, database)
    finally:
        database.close()
    assert again["projectId"] == project["projectId"]
    assert again["webhookSecret"] == rotated["webhookSecret"]
    saved = json.loads((settings.data_dir / DEV_PROJECT_FILE).read_text())
    assert saved["webhookSecret"] == rotated["webhookSecret"]
    banner = dev_project_banner(settings)
    assert f"Development webhook secret:  {rotated['webhookSecret']}" in banner


def onair(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONAIR, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow  # real time or subprocesses: left out of make test-fast
def test_the_cli_prints_the_secret_and_rotates_it(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ONAIR_DATA_DIR": str(tmp_path / "data")}
    created = onair(env, "project", "create", "hooks")
    assert created.returncode == 0, created.stderr
    project = json.loads(created.stdout)
    assert set(project) == {"projectId", "apiKey", "webhookSecret"}
    assert project["webhookSecret"].startswith("whsec_")
    rotated = onair(
        env, "project", "rotate-webhook-secret", project["projectId"], "--grace-hours", "2"
    )
    assert rotated.returncode == 0, rotated.stderr
    answer = json.loads(rotated.stdout)
    assert set(answer) == {"projectId", "webhookSecret", "previousSecretValidUntil"}
    assert answer["webhookSecret"].startswith("whsec_")
    assert answer["webhookSecret"] != project["webhookSecret"]
    until = answer["previousSecretValidUntil"]
    database = Database(tmp_path / "data" / "onair.sqlite3")
    try:
        both = database.webhook_secrets(project["projectId"], utc_at(time.time()))
        after = database.webhook_secrets(project["projectId"], utc_at(unix_of(until) + 1))
    finally:
        database.close()
    assert both == [answer["webhookSecret"], project["webhookSecret"]]
    assert after == [answer["webhookSecret"]]
    assert abs(unix_of(until) - time.time() - 7200) < 60
    missing = onair(env, "project", "rotate-webhook-secret", "no-such-project")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines()[-1] == "onair: no project no-such-project"


@pytest.mark.slow  # real time or subprocesses: left out of make test-fast
def test_the_cli_says_in_one_line_that_the_store_cannot_be_opened(tmp_path: Path) -> None:
    url = f"postgresql://onair:s3cretpw@127.0.0.1:{free_port()}/onair"
    env = {
        "PATH": "/usr/bin:/bin",
        "ONAIR_DATA_DIR": str(tmp_path / "data"),
        "ONAIR_DATABASE_URL": url,
        # for `onair run`: an external S3 (none is started) and free ports
        "ONAIR_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "ONAIR_S3_ACCESS_KEY": "a",
        "ONAIR_S3_SECRET_KEY": "b",
        "ONAIR_HTTP_PORT": str(free_port()),
        "ONAIR_RTMP_PORT": str(free_port()),
        "ONAIR_RTMP_HOST": "127.0.0.1",
    }
    for args in (("project", "create", "x"), ("project", "rotate-webhook-secret", "p"), ("run",)):
        done = onair(env, *args)
        assert done.returncode == 1, args
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("onair: cannot open the store (PostgreSQL at ")
        assert "s3cretpw" not in done.stderr and "Traceback" not in done.stderr
