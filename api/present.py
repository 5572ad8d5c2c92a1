"""How database rows become the reference's JSON: each result as its model (`api.models`),
and the envelope that sends it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web

from encoder.templates import JobTemplate, get_template
from ingest.session import BACKUP_APP, HLS_BACKUP_APP
from ingest.stats import SourceStatistics
from packager.layout import dvr_master_key, live_playlist_key, master_key, object_prefix

from .database import utcnow
from .errors import ValidationFailed
from .models import (
    Envelope,
    JobTemplateRow,
    LiveJob,
    LiveJobInputView,
    LiveJobSummary,
    Option,
    Output,
    Paged,
    PageInfo,
    Timing,
)
from .settings import Settings
from .statistics import from_record, source_view
from .status import LiveStatus
from .validation import (
    HLS_SERVER_TYPE,
    INPUT_CLASSES,
    SERVER_TYPES,
    SRT_SERVER_TYPE,
    STANDARD_INPUT_CLASS,
    Paging,
)


def envelope(
    result: Any,
    *,
    status: int = 200,
    page: PageInfo | None = None,
    errors: list[str] | None = None,
    messages: list[str] | None = None,
) -> web.Response:
    """The response: `result` (a model, a list of them, or None) in the envelope, with
    `page` as its `resultInfo` for a paged list."""
    fields: dict[str, Any] = {
        "success": 200 <= status < 300,
        "errors": errors or [],
        "messages": messages or [],
        "result": result,
        "status_code": status,
    }
    body = Paged[Any](**fields, result_info=page) if page else Envelope[Any](**fields)
    return web.json_response(body.model_dump(mode="json", by_alias=True), status=status)


def page_info(total_count: int, paging: Paging) -> PageInfo:
    total_pages = math.ceil(total_count / paging.page_size) if total_count else 0
    return PageInfo(
        total_count=total_count,
        page_index=paging.page_index,
        page_size=paging.page_size,
        total_pages=total_pages,
        has_next_page=paging.page_index < total_pages,
        has_previous_page=paging.page_index > 1,
    )


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


def _ingest_urls(settings: Settings, job: dict[str, Any]) -> tuple[str | None, str | None]:
    """(`rtmpServer`, `ingestUrl`): where the publisher connects, without and with the
    key; (None, None) for an HLS job that pulls its source."""
    host, key = settings.public_host, job["stream_key"]
    if job["server_type"] == SRT_SERVER_TYPE:
        server = f"srt://{host}:{settings.srt_port}"
        return server, f"{server}?streamid=#!::r=live/{key},m=publish"
    if job["server_type"] == HLS_SERVER_TYPE:
        if job["source_url"]:
            return None, None
        server = f"http://{host}:{settings.hls_ingest_port}/hls/"
        return server, f"{server}{key}/index.m3u8"
    server = f"rtmp://{host}:{settings.rtmp_port}/live/"
    return server, server + key


def _backup_ingest_url(settings: Settings, job: dict[str, Any]) -> str | None:
    """`backupIngestUrl`: where a Standard job's backup publisher connects, with the
    key; None for a Single job, and for an HLS pull job (onair fetches its
    backupSourceUrl)."""
    if job["input_class"] != STANDARD_INPUT_CLASS:
        return None
    host, key = settings.public_host, job["stream_key"]
    if job["server_type"] == SRT_SERVER_TYPE:
        return f"srt://{host}:{settings.srt_port}?streamid=#!::r={BACKUP_APP}/{key},m=publish"
    if job["server_type"] == HLS_SERVER_TYPE:
        if job["source_url"]:
            return None
        return f"http://{host}:{settings.hls_ingest_port}/{HLS_BACKUP_APP}/{key}/index.m3u8"
    return f"rtmp://{host}:{settings.rtmp_port}/{BACKUP_APP}/{key}"


def masked_passphrase(passphrase: str | None) -> str | None:
    return None if passphrase is None else passphrase[:2] + "…"


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
    server, ingest_url = _ingest_urls(settings, job)
    renditions = [r.name for r in template.renditions]
    if outputs is not None:
        encoded = {o["rendition"] for o in outputs if not o["skipped"]}
        renditions = [name for name in renditions if name in encoded]
    return {
        "rtmp_server": server,
        "ingest_url": ingest_url,
        "backup_ingest_url": _backup_ingest_url(settings, job),
        "web_socket_connection": f"{settings.websocket_base_url}/websocketplay/{job['name']}",
        "cdn": _cdn_url(settings, job, master_key(prefix)),
        "storage_master_file": _storage_url(settings, job["bucket"], master_key(prefix)),
        "storage_dvr_master_file": _storage_url(settings, job["bucket"], dvr_master_key(prefix)),
        "output_manifests": {
            name: _storage_url(settings, job["bucket"], live_playlist_key(prefix, name))
            for name in renditions
        },
    }


def _options(choices: dict[int, str], chosen: int) -> list[Option]:
    return [Option(id=k, value=v, enabled=k == chosen) for k, v in choices.items()]


def job_summary(job: dict[str, Any]) -> LiveJobSummary:
    """A row of the live-jobs list: status by name."""
    return LiveJobSummary(
        id=job["id"],
        name=job["name"],
        key=job["stream_key"],
        status=LiveStatus(job["status"]).label,
        description=job["description"],
        file_path=job["file_path"],
        insert_date=job["insert_date"],
        start_date_time=job["start_date_time"],
        end_date_time=job["end_date_time"],
    )


def _running_on(job: dict[str, Any]) -> str | None:
    """The host (pod) whose lease the job's pipeline runs under, None when none does."""
    until = job.get("lease_expires_at")
    if not job.get("lease_host") or until is None or until <= utcnow():
        return None
    return str(job["lease_host"])


def job_detail(
    settings: Settings,
    job: dict[str, Any],
    statistics: SourceStatistics | None = None,
    outputs: Sequence[dict[str, Any]] | None = None,
) -> LiveJob:
    """A live job in full: status by number. `outputs`: see `job_urls`."""
    template = get_template(job["job_template_id"])
    return LiveJob(
        id=job["id"],
        name=job["name"],
        key=job["stream_key"],
        destination=job["destination"],
        description=job["description"],
        project_id=job["project_id"],
        status=job["status"],
        online=bool(job["online"]),
        insert_date=job["insert_date"],
        start_date_time=job["start_date_time"],
        end_date_time=job["end_date_time"],
        job_template_id=job["job_template_id"],
        argo_resource_name=_running_on(job),
        resource_name=f"livejob-{job['id']}",
        bucket=job["bucket"],
        cdn_distribution=bool(job["cdn_distribution"]),
        viewer_token_required=bool(job.get("viewer_token_required")),
        **job_urls(settings, job, template, outputs),
        input=LiveJobInputView(
            file_path=job["file_path"],
            server_type=job["server_type"],
            server_type_options=_options(SERVER_TYPES, job["server_type"]),
            input_class=job["input_class"],
            input_class_options=_options(INPUT_CLASSES, job["input_class"]),
            callback_url=job["callback_url"],
            srt_passphrase=masked_passphrase(job["srt_passphrase"]),
            source_url=job["source_url"],
            input_loss_threshold_ms=job["input_loss_threshold_ms"],
            input_preference=job["input_preference"],
            failback_after_seconds=job["failback_after_seconds"],
            backup_source_url=job["backup_source_url"],
        ),
        statistics=source_view(
            statistics if statistics is not None else from_record(job["statistics"])
        ),
    )


def output_row(output: dict[str, Any]) -> Output:
    return Output(
        live_job_id=output["live_job_id"],
        output_id=output["output_id"],
        name=output["rendition"],
        progress=output["progress"],
        status=output["status"],
        lock_key=output["lock_key"],
        counter=output["counter"],
        encoder_id=output["encoder_id"],
        skipped=bool(output["skipped"]),
        skip_reason=output["skip_reason"],
    )


def timing_row(timing: dict[str, Any]) -> Timing:
    return Timing(
        status=timing["status"],
        child_status=timing["child_status"],
        start_date_time=timing["start_date_time"],
        message_comment=timing["message_comment"],
        output_id=timing["output_id"],
    )


def template_row(template: JobTemplate) -> JobTemplateRow:
    return JobTemplateRow(
        id=template.id,
        name=template.name,
        job_template_type=template.template_type,
        category=template.category,
        description=template.description,
    )


async def json_body(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON body (a 400 naming `body` if it is not JSON); with
    `optional`, a request without a body reads as `{}`."""
    if optional and not request.body_exists:
        return {}
    try:
        return json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationFailed(["body: malformed JSON"]) from None
    except RecursionError:  # json.loads recurses once per level: `[[[[...`
        raise ValidationFailed(["body: JSON nested too deeply"]) from None
