"""Assembles the whole service: the control API plus the media runtime."""

from __future__ import annotations

from aiohttp import web

from packager.object_store import S3Storage

from .app import METRICS_KEY, create_app
from .runtime import MediaRuntime
from .settings import Settings
from .views import JOBS_KEY


def storage_for(settings: Settings) -> S3Storage:
    return S3Storage(
        settings.s3_endpoint or f"http://127.0.0.1:{settings.s3_port}",
        settings.s3_access_key,
        settings.s3_secret_key,
        settings.s3_region,
    )


def build_app(settings: Settings) -> web.Application:
    """The service: the API, the RTMP ingest and the pipelines, on one event loop."""
    storage = storage_for(settings)
    return create_app(
        settings,
        storage_ping=storage.ping,
        runtime_factory=lambda app: MediaRuntime(
            settings, app[JOBS_KEY], storage, registry=app[METRICS_KEY]
        ),
    )
