"""The web console under test: the whole service (its app serves the console), and the
Chromium the players tier uses, driven by Playwright."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from api.app import RouteAccessLogger, create_app
from media.outbound import OutboundPolicy
from packager.s3server import EmbeddedS3
from tests.support.ports import free_port
from tests.support.service import Live, make_projects, make_settings


async def start_console_live(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any, **overrides: Any
) -> AsyncIterator[Live]:
    """The whole service, one project; restreams may reach loopback
    (the test's restream target is 127.0.0.1)."""
    # The API on a port of its own that the settings name, so the URLs the API gives
    # (the WebSocket preview's) point at it.
    http_port = free_port()
    settings = make_settings(
        tmp_path,
        s3_server,
        http_port=http_port,
        outbound=OutboundPolicy(allow_private=True),
        **overrides,
    )
    project = make_projects(settings.db_path, 1)[0]
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=http_port)
    await server.start_server(access_log_class=RouteAccessLogger)
    try:
        async with aiohttp.ClientSession() as session:
            yield Live(settings, server, session, project, s3_client)
    finally:
        await server.close()
