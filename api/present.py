"""How database rows become the reference's JSON: the envelope and each result shape."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web

from encoder.templates import JobTemplate, get_template
from packager.layout import dvr_master_key, live_playlist_key, master_key, object_prefix

from .database import Page
from .records import job_statistics
from .settings import Settings
from .status import LiveStatus
from .validation import INPUT_CLASSES, RTMP_SERVER_TYPE, SERVER_TYPES, Paging


def envelope(
    result: Any,
    *,
    status: int = 200,
    result_info: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    messages: list[str] | None = None,
) -> web.Response:
    body = {
        "success": 200 <= status < 300,
        "errors": errors or [],
        "messages": messages or [],
        "result": result,
        "resultInfo": result_info,
        "statusCode": status,
    }
    return web.json_response(body, status=status)


def page_info(page: Page, paging: Paging) -> dict[str, Any]:
    total_pages = math.ceil(page.total_count / paging.page_size) if page.total_count else 0
    return {
        "totalCount": page.total_count,
        "pageIndex": paging.page_index,
        "pageSize": paging.page_size,
        "totalPages": total_pages,
        "hasNextPage": paging.page_index < total_pages,
        "hasPreviousPage": paging.page_index > 1,
    }


def url_path(*parts: str) -> str:
    """`parts` joined by '/', each of their '/'-separated segments percent-encoded.

    Bucket, destination, filePath and rendition names become path segments of a URL:
    a space, '#', '?' or a non-ASCII character must not end or change it.
    """
    return "/".join(quote(segment, safe="") for part in parts for segment in part.split("/"))


def _storage_url(settings: Settings, bucket: str, key: str) -> str:
    return f"{settings.storage_base_url}/{url_path(bucket, key)}"


def _cdn_url(settings: Settings, job: dict[str, Any], key: str) -> str | None:
    """A CDN in front of the S3 public URL: its origin path is the bucket path."""
    if not job["cdn_distribution"] or not settings.cdn_base_url:
        return None
    return f"{settings.cdn_base_url}/{url_path(job['bucket'], key)}"


def _rtmp_server(settings: Settings, job: dict[str, Any]) -> str | None:
    """Where OBS connects; None for SRT and HLS jobs, whose ingest is not built yet."""
    if job["server_type"] != RTMP_SERVER_TYPE:
        return None
    return f"rtmp://{settings.public_host}:{settings.rtmp_port}/live/"


def playback_url(settings: Settings, job: dict[str, Any]) -> str:
    """The toggle's `playBackPathURL`: the CDN master playlist if any, else storage's."""
    key = master_key(object_prefix(job["destination"], job["file_path"]))
    return _cdn_url(settings, job, key) or _storage_url(settings, job["bucket"], key)


def job_urls(
    settings: Settings,
    job: dict[str, Any],
    template: JobTemplate,
    outputs: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Where the job's publisher connects and where its outputs will be.

    `outputs` are the job's output rows: renditions they mark skipped get no manifest.
    Without them (None), every rendition of the template is listed.
    """
    prefix = object_prefix(job["destination"], job["file_path"])
    renditions = [r.name for r in template.renditions]
    if outputs is not None:
        encoded = {o["rendition"] for o in outputs if not o["skipped"]}
        renditions = [name for name in renditions if name in encoded]
    return {
        "rtmpServer": _rtmp_server(settings, job),
        "webSocketConnection": (
            f"ws://{settings.public_host}:{settings.http_port}/api/v1/projects/"
            f"{job['project_id']}/livejobs/{job['name']}/events"
        ),
        "cdn": _cdn_url(settings, job, master_key(prefix)),
        "storageMasterFile": _storage_url(settings, job["bucket"], master_key(prefix)),
        "storageDvrMasterFile": _storage_url(settings, job["bucket"], dvr_master_key(prefix)),
        "outputManifests": {
            name: _storage_url(settings, job["bucket"], live_playlist_key(prefix, name))
            for name in renditions
        },
    }


def _options(choices: dict[int, str], chosen: int) -> list[dict[str, Any]]:
    return [{"id": k, "value": v, "enabled": k == chosen} for k, v in choices.items()]


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """A row of the live-jobs list: status by name."""
    return {
        "id": job["id"],
        "name": job["name"],
        "key": job["stream_key"],
        "status": LiveStatus(job["status"]).label,
        "description": job["description"],
        "filePath": job["file_path"],
        "insertDate": job["insert_date"],
        "startDateTime": job["start_date_time"],
        "endDateTime": job["end_date_time"],
    }


def job_detail(
    settings: Settings,
    job: dict[str, Any],
    statistics: dict[str, Any] | None = None,
    outputs: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A live job in full: status by number. `outputs`: see `job_urls`."""
    template = get_template(job["job_template_id"])
    return {
        "id": job["id"],
        "name": job["name"],
        "key": job["stream_key"],
        "destination": job["destination"],
        "description": job["description"],
        "projectId": job["project_id"],
        "status": job["status"],
        "online": bool(job["online"]),
        "insertDate": job["insert_date"],
        "startDateTime": job["start_date_time"],
        "endDateTime": job["end_date_time"],
        "jobTemplateId": job["job_template_id"],
        "argoResourceName": None,
        "resourceName": f"livejob-{job['id']}",
        "bucket": job["bucket"],
        "cdnDistribution": bool(job["cdn_distribution"]),
        **job_urls(settings, job, template, outputs),
        "input": {
            "filePath": job["file_path"],
            "serverType": job["server_type"],
            "serverTypeOptions": _options(SERVER_TYPES, job["server_type"]),
            "inputClass": job["input_class"],
            "inputClassOptions": _options(INPUT_CLASSES, job["input_class"]),
            "callbackUrl": job["callback_url"],
        },
        "statistics": statistics if statistics is not None else job_statistics(job),
    }


def output_row(output: dict[str, Any]) -> dict[str, Any]:
    return {
        "liveJobId": output["live_job_id"],
        "outputId": output["output_id"],
        "name": output["rendition"],
        "progress": output["progress"],
        "status": output["status"],
        "lockKey": output["lock_key"],
        "counter": output["counter"],
        "encoderId": output["encoder_id"],
        "skipped": bool(output["skipped"]),
        "skipReason": output["skip_reason"],
    }


def timing_row(timing: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": timing["status"],
        "childStatus": timing["child_status"],
        "startDateTime": timing["start_date_time"],
        "messageComment": timing["message_comment"],
        "outputId": timing["output_id"],
    }


def template_row(template: JobTemplate) -> dict[str, Any]:
    return {
        "id": template.id,
        "name": template.name,
        "jobTemplateType": template.template_type,
        "category": template.category,
        "description": template.description,
    }
