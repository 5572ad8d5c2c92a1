"""The control API's handlers: parse, ask the live jobs' owner (`LiveJobs`), present."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import WSMsgType, web

from encoder.templates import all_templates

from .database import Page
from .errors import ValidationFailed
from .lives import LiveJobs
from .present import (
    envelope,
    job_detail,
    job_summary,
    output_row,
    page_info,
    playback_url,
    template_row,
    timing_row,
)
from .settings import Settings
from .validation import (
    Paging,
    parse_new_live_job,
    parse_optional_id,
    parse_paging,
    parse_toggle,
    query_text,
)

SETTINGS_KEY = web.AppKey("settings", Settings)
LIVE_JOBS_KEY = web.AppKey("live_jobs", LiveJobs)

SUPPORTED_VERSIONS = ("1",)
EVENTS_INTERVAL_SECONDS = 1.0

routes = web.RouteTableDef()


def _project(request: web.Request) -> str:
    version = request.match_info.get("version")
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise web.HTTPNotFound(reason=f"API version v{version} is not supported")
    return request.match_info["projectId"]


def _paging(request: web.Request, errors: list[str]) -> Paging:
    return parse_paging(request.rel_url.query, errors)


async def _json_body(request: web.Request) -> Any:
    try:
        text = await request.text()
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationFailed(["body: malformed JSON"]) from None
    except RecursionError:  # json.loads recurses once per level: `[[[[...`
        raise ValidationFailed(["body: JSON nested too deeply"]) from None


def _paged(rows: list[dict[str, Any]], page: Page, paging: Paging) -> web.Response:
    return envelope(rows, result_info=page_info(page, paging))


@routes.get("/api/v{version}/projects/{projectId}/livejobs")
async def list_live_jobs(request: web.Request) -> web.Response:
    project_id = _project(request)
    errors: list[str] = []
    paging = _paging(request, errors)
    if errors:
        raise ValidationFailed(errors)
    search = query_text(request.rel_url.query, "search")
    page = await request.app[LIVE_JOBS_KEY].list_jobs(project_id, search or None, paging)
    return _paged([job_summary(j) for j in page.rows], page, paging)


@routes.post("/api/v{version}/projects/{projectId}/livejobs")
async def create_live_job(request: web.Request) -> web.Response:
    project_id = _project(request)
    settings = request.app[SETTINGS_KEY]
    new = parse_new_live_job(await _json_body(request), settings.s3_buckets)
    job = await request.app[LIVE_JOBS_KEY].create(project_id, new)
    return envelope(
        job_detail(settings, job),  # a new job skips no rendition yet
        status=201,
        messages=["live job created"],
    )


@routes.get("/api/v{version}/projects/{projectId}/livejobs/outputs")
async def list_outputs(request: web.Request) -> web.Response:
    project_id = _project(request)
    errors: list[str] = []
    paging = _paging(request, errors)
    job_id = parse_optional_id(request.rel_url.query, "liveJobId", errors)
    if errors:
        raise ValidationFailed(errors)
    jobs = request.app[LIVE_JOBS_KEY]
    if job_id is not None:
        await jobs.get(project_id, str(job_id))  # 404 for another project's or no job
    page = await jobs.outputs(project_id, job_id, paging)
    return _paged([output_row(o) for o in page.rows], page, paging)


# One path template with GET below (OpenAPI forbids two that differ only by the
# parameter's name): for POST, `{id}` is the job's stream key.
@routes.post("/api/v{version}/projects/{projectId}/livejobs/{id}")
async def toggle_live_job(request: web.Request) -> web.Response:
    project_id = _project(request)
    toggle = parse_toggle(await _json_body(request))
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.set_online(project_id, request.match_info["id"], toggle)
    return envelope(
        {
            "online": bool(job["online"]),
            "playBackPathURL": playback_url(request.app[SETTINGS_KEY], job),
        },
        status=201,
        messages=["live job online" if job["online"] else "live job offline"],
    )


@routes.get("/api/v{version}/projects/{projectId}/livejobs/{id}")
async def get_live_job(request: web.Request) -> web.Response:
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    job, outputs = await jobs.get_with_outputs(project_id, request.match_info["id"])
    return envelope(job_detail(request.app[SETTINGS_KEY], job, jobs.statistics(job), outputs))


# Not the toggle above: a longer path, and here `{id}` is the job's id or name.
@routes.post("/api/v{version}/projects/{projectId}/livejobs/{id}/key")
async def rotate_stream_key(request: web.Request) -> web.Response:
    """A new stream key for the job (201: a new key is created); the old one is refused."""
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    rotated = await jobs.rotate_key(project_id, request.match_info["id"])
    job, outputs = await jobs.get_with_outputs(project_id, str(rotated["id"]))
    return envelope(
        job_detail(request.app[SETTINGS_KEY], job, jobs.statistics(job), outputs),
        status=201,
        messages=["stream key rotated: the previous key is refused from now on"],
    )


@routes.get("/api/v{version}/projects/{projectId}/livejobs/{id}/timings")
async def list_timings(request: web.Request) -> web.Response:
    project_id = _project(request)
    errors: list[str] = []
    paging = _paging(request, errors)
    output_id = parse_optional_id(request.rel_url.query, "outputId", errors)
    if errors:
        raise ValidationFailed(errors)
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.get(project_id, request.match_info["id"])
    page = await jobs.timings(job, output_id, paging)
    return _paged([timing_row(t) for t in page.rows], page, paging)


@routes.get("/api/v{version}/projects/{projectId}/livejobs/{id}/stats")
async def get_stats(request: web.Request) -> web.Response:
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.get(project_id, request.match_info["id"])
    statistics = {
        **jobs.statistics(job),
        "droppedFrames": jobs.dropped_frames(job),
        "outputs": jobs.output_statistics(job),
    }
    return envelope([statistics])


@routes.get("/api/v{version}/projects/{projectId}/livejobs/{id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    """WebSocket: the job's status and statistics once a second (`webSocketConnection`)."""
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.get(project_id, request.match_info["id"])
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    settings = request.app[SETTINGS_KEY]
    while not ws.closed:
        job = await jobs.get(project_id, str(job["id"]))
        detail = job_detail(settings, job, jobs.statistics(job))
        await ws.send_json(
            {
                "status": detail["status"],
                "online": detail["online"],
                "statistics": detail["statistics"],
                "outputs": jobs.output_statistics(job),
            }
        )
        try:
            msg = await ws.receive(timeout=EVENTS_INTERVAL_SECONDS)
        except TimeoutError:
            continue
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    return ws


@routes.get("/api/v{version}/projects/{projectId}/jobtemplates")
async def list_job_templates(request: web.Request) -> web.Response:
    _project(request)
    errors: list[str] = []
    paging = _paging(request, errors)
    if errors:
        raise ValidationFailed(errors)
    templates = all_templates()
    rows = [template_row(t) for t in templates[paging.offset : paging.offset + paging.page_size]]
    return _paged(rows, Page(rows, len(templates)), paging)
