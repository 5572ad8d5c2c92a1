"""Renditions a pipeline does not encode: recorded per output, left out of the manifests."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from api.database import Database, head_revision, utcnow
from api.views import LIVE_JOBS_KEY
from packager.s3server import EmbeddedS3
from tests.support.legacy_store import create_legacy_store, job_row, legacy_job, legacy_project
from tests.support.service import (
    CREATE_BODY,
    Api,
    Project,
    elsewhere,
    make_settings,
    start_api,
)

LADDER = ["1080p", "720p", "480p", "360p"]  # template 1


async def _outputs(api: Api, job_id: int) -> dict[str, dict[str, object]]:
    status, body = await api.call("GET", f"/livejobs/outputs?liveJobId={job_id}")
    assert status == 200, body
    return {row["name"]: row for row in body["result"]}


async def test_skipped_renditions_are_marked_and_not_listed(api: Api) -> None:
    job = await api.create_job(jobTemplateId=1)
    other = await api.create_job(jobTemplateId=1, **elsewhere("2026/ep2"))
    assert list(job["outputManifests"]) == LADDER
    jobs = api.app[LIVE_JOBS_KEY]

    await jobs.mark_skipped(job["id"], {"1080p": "source is 1280x720"})
    _, body = await api.call("GET", f"/livejobs/{job['id']}")
    manifests = body["result"]["outputManifests"]
    assert list(manifests) == ["720p", "480p", "360p"]
    assert manifests["720p"] == job["outputManifests"]["720p"]
    outputs = await _outputs(api, job["id"])
    assert outputs["1080p"]["skipped"] is True
    assert outputs["1080p"]["skipReason"] == "source is 1280x720"
    for name in ("720p", "480p", "360p"):
        assert (outputs[name]["skipped"], outputs[name]["skipReason"]) == (False, None)
    assert {row["status"] for row in outputs.values()} == {1}  # still the live status
    # Another job of the same template is not touched.
    assert not any(row["skipped"] for row in (await _outputs(api, other["id"])).values())
    _, body = await api.call("GET", f"/livejobs/{other['id']}")
    assert list(body["result"]["outputManifests"]) == LADDER

    # A new pipeline re-plans: a smaller source now, then a full-size one.
    await jobs.mark_skipped(job["id"], {"1080p": "source is 854x480", "720p": "source is 854x480"})
    _, body = await api.call("GET", f"/livejobs/{job['name']}")
    assert list(body["result"]["outputManifests"]) == ["480p", "360p"]
    outputs = await _outputs(api, job["id"])
    assert [n for n, row in outputs.items() if row["skipped"]] == ["1080p", "720p"]
    assert outputs["720p"]["skipReason"] == "source is 854x480"

    await jobs.mark_skipped(job["id"], {})
    _, body = await api.call("GET", f"/livejobs/{job['id']}")
    assert list(body["result"]["outputManifests"]) == LADDER
    outputs = await _outputs(api, job["id"])
    assert not any(row["skipped"] or row["skipReason"] for row in outputs.values())


async def test_a_data_dir_of_the_previous_schema_migrates_in_place(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    settings = make_settings(tmp_path, s3_server)
    create_legacy_store(settings.db_path, 1)  # the schema before skips (user_version 1)
    project = Project("p", legacy_project(settings.db_path, "p", utcnow()))
    row = job_row(
        project.id,
        CREATE_BODY["bucket"],
        CREATE_BODY["destination"],
        CREATE_BODY["input"]["filePath"],
        job_template_id=1,
    )
    job = {"id": legacy_job(settings.db_path, row, LADDER), "key": row["stream_key"]}
    async with aiohttp.ClientSession(headers=project.headers) as session:
        server = await start_api(settings)
        try:
            base = str(server.make_url("")).rstrip("/") + f"/api/v1/projects/{project.id}"
            async with session.get(f"{base}/livejobs/outputs?liveJobId={job['id']}") as r:
                rows = (await r.json())["result"]
            assert [(row["name"], row["skipped"], row["skipReason"]) for row in rows] == [
                (name, False, None) for name in LADDER
            ]
            await server.app[LIVE_JOBS_KEY].mark_skipped(job["id"], {"1080p": "source is 1280x720"})
            async with session.get(f"{base}/livejobs/{job['id']}") as r:
                detail = (await r.json())["result"]
            assert list(detail["outputManifests"]) == LADDER[1:]
            assert detail["key"] == job["key"]
        finally:
            await server.close()
    database = Database(settings.db_path)
    try:
        assert database.schema_revision == head_revision()
    finally:
        database.close()
