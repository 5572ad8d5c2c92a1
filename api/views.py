"""The control API's handlers: parse, ask the live jobs' owner (`LiveJobs`), present;
and its route table (`ROUTES`), from which the router and the OpenAPI document are made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import BaseModel

from encoder.templates import all_templates
from ingest.health import Health

from .health import healthz
from .lives import LiveJobs
from .models import (
    HealthReasonView,
    HealthResult,
    JobStatistics,
    JobTemplateRow,
    LiveJob,
    LiveJobSummary,
    LiveStatusResult,
    Output,
    Timing,
    ToggleResult,
    WebhookAttempt,
    WebhookDelivery,
)
from .openapi import PathParameter, Route
from .present import (
    envelope,
    job_detail,
    job_summary,
    json_body,
    output_row,
    page_info,
    playback_url,
    template_row,
    timing_row,
)
from .relay import relay_websocket, relayed
from .restreams.views import RESTREAM_ROUTES
from .settings import Settings
from .statistics import input_views, output_view, source_view, transport_view
from .status import LiveStatus
from .validation import (
    LiveJobsQuery,
    NewLiveJob,
    OutputsQuery,
    Paging,
    TimingsQuery,
    Toggle,
    WebhookDeliveriesQuery,
    parse,
)
from .videos.views import VIDEO_ROUTES

SETTINGS_KEY = web.AppKey("settings", Settings)
LIVE_JOBS_KEY = web.AppKey("live_jobs", LiveJobs)

SUPPORTED_VERSIONS = ("1",)
EVENTS_INTERVAL_SECONDS = 1.0


def _project(request: web.Request) -> str:
    version = request.match_info.get("version")
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise web.HTTPNotFound(reason=f"API version v{version} is not supported")
    return request.match_info["projectId"]


def _paged(rows: Sequence[BaseModel], total_count: int, paging: Paging) -> web.Response:
    return envelope(rows, page=page_info(total_count, paging))


async def list_live_jobs(request: web.Request) -> web.Response:
    project_id = _project(request)
    query = parse(LiveJobsQuery, request.rel_url.query)
    page = await request.app[LIVE_JOBS_KEY].list_jobs(project_id, query.search or None, query)
    return _paged([job_summary(j) for j in page.rows], page.total_count, query)


async def create_live_job(request: web.Request) -> web.Response:
    project_id = _project(request)
    settings = request.app[SETTINGS_KEY]
    new = parse(NewLiveJob, await json_body(request), allowed_buckets=settings.s3_buckets)
    job = await request.app[LIVE_JOBS_KEY].create(project_id, new)
    return envelope(
        job_detail(settings, job),  # a new job skips no rendition yet
        status=201,
        messages=["live job created"],
    )


async def list_outputs(request: web.Request) -> web.Response:
    project_id = _project(request)
    query = parse(OutputsQuery, request.rel_url.query)
    jobs = request.app[LIVE_JOBS_KEY]
    if query.live_job_id is not None:
        await jobs.get(project_id, str(query.live_job_id))  # 404: another project's, or none
    page = await jobs.outputs(project_id, query.live_job_id, query)
    return _paged([output_row(o) for o in page.rows], page.total_count, query)


async def toggle_live_job(request: web.Request) -> web.Response:
    project_id = _project(request)
    toggle = parse(Toggle, await json_body(request))
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.set_online(project_id, request.match_info["id"], toggle)
    return envelope(
        ToggleResult(
            online=bool(job["online"]),
            playBackPathURL=playback_url(request.app[SETTINGS_KEY], job),
        ),
        status=201,
        messages=["live job online" if job["online"] else "live job offline"],
    )


async def get_live_job(request: web.Request) -> web.Response:
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    job, outputs = await jobs.get_with_outputs(project_id, request.match_info["id"])
    return envelope(job_detail(request.app[SETTINGS_KEY], job, jobs.statistics(job), outputs))


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


async def list_timings(request: web.Request) -> web.Response:
    project_id = _project(request)
    query = parse(TimingsQuery, request.rel_url.query)
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.get(project_id, request.match_info["id"])
    page = await jobs.timings(job, query.output_id, query)
    return _paged([timing_row(t) for t in page.rows], page.total_count, query)


async def get_stats(request: web.Request) -> web.Response:
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.get(project_id, request.match_info["id"])
    health = jobs.health(job)
    statistics = JobStatistics(
        **source_view(jobs.statistics(job)).model_dump(),
        dropped_frames=jobs.dropped_frames(job),
        health_status_name=health.state.value,
        health_reasons=_health_reasons(health),
        outputs=[output_view(row) for row in jobs.output_statistics(job)],
        transport=transport_view(jobs.transport_statistics(job)),
        **input_views(jobs.running_pipeline(job)),
    )
    return envelope([statistics])


def _health_reasons(health: Health) -> list[HealthReasonView]:
    return [HealthReasonView(type=r.type.value, description=r.description) for r in health.reasons]


async def refresh_live_status(request: web.Request) -> web.Response:
    """A live video's status and its input's health, computed now; the live video's
    `{videoId}` is its job's name (UUID) or id."""
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.get(project_id, request.match_info["videoId"])
    health = jobs.health(job)
    return envelope(
        LiveStatusResult(
            status_name=LiveStatus(job["status"]).label,
            health_status_name=health.state.value,
            health_reasons=_health_reasons(health),
        )
    )


async def live_job_events(request: web.Request) -> web.StreamResponse:
    """WebSocket: the job's status and statistics once a second (`webSocketConnection`)."""
    project_id = _project(request)
    jobs = request.app[LIVE_JOBS_KEY]
    job = await jobs.get(project_id, request.match_info["id"])
    elsewhere = None if relayed(request) else await jobs.runs_elsewhere(job)
    if elsewhere is not None:
        return await relay_websocket(request, elsewhere)  # its live figures are there
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    settings = request.app[SETTINGS_KEY]
    while not ws.closed:
        job = await jobs.get(project_id, str(job["id"]))
        detail = job_detail(settings, job, jobs.statistics(job))
        await ws.send_json(
            {
                "status": detail.status,
                "online": detail.online,
                "statistics": detail.statistics.model_dump(by_alias=True),
                "outputs": [
                    output_view(row).model_dump(by_alias=True)
                    for row in jobs.output_statistics(job)
                ],
            }
        )
        try:
            msg = await ws.receive(timeout=EVENTS_INTERVAL_SECONDS)
        except TimeoutError:
            continue
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    return ws


def _delivery_row(row: dict[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["webhook_id"],
        live_job_id=row["live_job_id"],
        type=row["type"],
        state=row["state"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        attempt_log=[
            WebhookAttempt(
                at=a["attempted_at"],
                status_code=a["status_code"],
                error=a["error"],
                duration_ms=a["duration_ms"],
            )
            for a in row["attempt_log"]
        ],
    )


async def list_webhook_deliveries(request: web.Request) -> web.Response:
    """Every webhook delivery of the project (or of one job), newest first."""
    project_id = _project(request)
    query = parse(WebhookDeliveriesQuery, request.rel_url.query)
    jobs = request.app[LIVE_JOBS_KEY]
    page = await jobs.webhook_deliveries(project_id, query.live_job_id, query)
    return _paged([_delivery_row(row) for row in page.rows], page.total_count, query)


async def list_job_templates(request: web.Request) -> web.Response:
    _project(request)
    paging = parse(Paging, request.rel_url.query)
    templates = all_templates()
    rows = [template_row(t) for t in templates[paging.offset : paging.offset + paging.page_size]]
    return _paged(rows, len(templates), paging)


PROJECT = {
    "version": PathParameter("API version", {"type": "string", "enum": list(SUPPORTED_VERSIONS)}),
    "projectId": PathParameter("The project id", {"type": "string", "format": "uuid"}),
}
JOB = {**PROJECT, "id": PathParameter("The live job's id (integer) or name (UUID)")}
PROJECT_ONLY = {"projectId": PROJECT["projectId"]}  # the platform's /api/v1/{projectId}/... paths
# GET and POST share one path template (OpenAPI forbids two that differ only by a
# parameter's name): for POST, `{id}` is the job's stream key.
LIVE_VIDEO = {
    **PROJECT_ONLY,
    "videoId": PathParameter("The live video's id: its live job's name (UUID) or id (integer)"),
}
JOB_OR_KEY = {**PROJECT, "id": PathParameter("The job id or name for GET, the stream key for POST")}
BASE = "/api/v{version}/projects/{projectId}"

# fmt: off
ROUTES = (
    Route("GET", f"{BASE}/livejobs", list_live_jobs, "List live jobs (paged, searchable)",
          LiveJobSummary, paged=True, query=LiveJobsQuery, parameters=PROJECT),
    Route("POST", f"{BASE}/livejobs", create_live_job, "Create a live job",
          LiveJob, status=201, body=NewLiveJob, parameters=PROJECT),
    Route("GET", f"{BASE}/livejobs/outputs", list_outputs,
          "List live encoding outputs (one per rendition)",
          Output, paged=True, query=OutputsQuery, parameters=PROJECT, errors=(404,)),
    Route("GET", f"{BASE}/livejobs/{{id}}", get_live_job, "Get a live job",
          LiveJob, parameters=JOB_OR_KEY, errors=(404,)),
    Route("POST", f"{BASE}/livejobs/{{id}}", toggle_live_job,
          "Put a live job online (accept its publisher) or offline, by its stream key",
          ToggleResult, status=201, body=Toggle, parameters=JOB_OR_KEY, errors=(404,)),
    # Not the toggle: a longer path, and here `{id}` is the job's id or name.
    Route("POST", f"{BASE}/livejobs/{{id}}/key", rotate_stream_key,
          "Rotate a live job's stream key: a new key, the previous one refused from now on"
          " (new publishers, the online toggle); a publisher already live is not cut",
          LiveJob, status=201, parameters=JOB, errors=(404,)),
    Route("GET", f"{BASE}/livejobs/{{id}}/timings", list_timings,
          "List a live job's timings (status changes and events)",
          Timing, paged=True, query=TimingsQuery, parameters=JOB, errors=(404,)),
    Route("GET", f"{BASE}/livejobs/{{id}}/stats", get_stats,
          "Get a live job's input statistics (and its outputs')",
          list[JobStatistics], parameters=JOB, errors=(404,)),
    Route("GET", f"{BASE}/livejobs/{{id}}/events", live_job_events,
          "WebSocket (webSocketConnection): the job's status, statistics and outputs,"
          " one JSON message a second",
          status=101, parameters=JOB, errors=(400, 404)),
    Route("GET", "/api/v1/{projectId}/webhooks/deliveries", list_webhook_deliveries,
          "List webhook deliveries (paged, newest first): each event sent to a job's"
          " callbackUrl, its state, attempts, last status code or error, next attempt",
          WebhookDelivery, paged=True, query=WebhookDeliveriesQuery, parameters=PROJECT_ONLY,
          errors=(404,)),
    Route("POST", "/api/v1/{projectId}/live-hubs/{videoId}/refresh-status", refresh_live_status,
          "Refresh a live video's status: its statusName and its input's healthStatusName"
          " (Healthy, Starving, Unknown) computed now, and why (healthReasons)",
          LiveStatusResult, parameters=LIVE_VIDEO, errors=(404,)),
    Route("GET", f"{BASE}/jobtemplates", list_job_templates, "List job templates",
          JobTemplateRow, paged=True, query=Paging, parameters=PROJECT),
    *VIDEO_ROUTES,  # live videos (stop-and-cut, cut-and-publish, stop) and their videos
    *RESTREAM_ROUTES,  # a live video's restreams (create, toggle, list, delete)
    Route("GET", "/healthz", healthz, "Health: the store is open and S3 answers",
          HealthResult, public=True, also=(503,)),
)
# fmt: on
