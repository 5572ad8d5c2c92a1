"""Assembles the whole service: the control API plus the media runtime."""

from __future__ import annotations

from collections.abc import Callable

import boto3
from aiohttp import web
from botocore.config import Config

from .app import create_app
from .settings import Settings


def storage_ping_for(settings: Settings) -> Callable[[], bool]:
    endpoint = settings.s3_endpoint or f"http://127.0.0.1:{settings.s3_port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 1}),
    )

    def ping() -> bool:
        try:
            client.list_buckets()
        except Exception:
            return False
        return True

    return ping


def build_app(settings: Settings) -> web.Application:
    return create_app(settings, storage_ping=storage_ping_for(settings))
