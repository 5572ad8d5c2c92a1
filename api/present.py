"""How store rows become the reference's JSON: the envelope and each result shape."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from encoder.templates import JobTemplate, get_template
from packager.layout import live_playlist_key, master_key, object_prefix

from .jobs import job_statistics
from .settings import Settings
from .status import LiveStatus
from .store import Page
from .validation import INPUT_CLASSES, SERVER_TYPES, Paging


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


def _storage_url(settings: Settings, bucket: str, key: str) -> str:
    return f"{settings.storage_base_url}/{bucket}/{key}"


def job_urls(settings: Settings, job: dict[str, Any], template: JobTemplate) -> dict[str, Any]:
    """Where the job's publisher connects and where its outputs will be."""
    prefix = object_prefix(job["destination"], job["file_path"])
    cdn = None
    if job["cdn_distribution"] and settings.cdn_base_url:
        cdn = f"{settings.cdn_base_url}/{master_key(prefix)}"
    return {
        "rtmpServer": f"rtmp://{settings.public_host}:{settings.rtmp_port}/live/",
        "webSocketConnection": (
            f"ws://{settings.public_host}:{settings.http_port}/api/v1/projects/"
            f"{job['project_id']}/livejobs/{job['name']}/events"
        ),
        "cdn": cdn,
        "storageMasterFile": _storage_url(settings, job["bucket"], master_key(prefix)),
        "outputManifests": {
            r.name: _storage_url(settings, job["bucket"], live_playlist_key(prefix, r.name))
            for r in template.renditions
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
    settings: Settings, job: dict[str, Any], statistics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A live job in full: status by number."""
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
        **job_urls(settings, job, template),
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
