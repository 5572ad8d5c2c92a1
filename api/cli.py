"""The `onair` command: `onair run` (the service) and `onair project create NAME`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from packager.s3server import EmbeddedS3, S3ServerError

from .app import RouteAccessLogger, create_app, listen_http
from .database import Database, restrict_mode, secure_data_dir
from .keys import new_api_key
from .settings import ConfigError, Settings, load_settings

logger = logging.getLogger("onair")

DEV_PROJECT_FILE = "dev-project.json"
S3_CREDENTIALS_FILE = "s3-credentials.json"
PRIVATE_FILE_MODE = 0o600


def _write_private(path: Path, data: dict[str, str]) -> None:
    secure_data_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)  # a file that existed keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)


def _read_private(path: Path) -> dict[str, str]:
    restrict_mode(path, PRIVATE_FILE_MODE)  # one written before files were kept 0600
    data: dict[str, str] = json.loads(path.read_text())
    return data


def create_project(database: Database, name: str) -> dict[str, str]:
    """A new project and its API key (shown once: only its hash is stored)."""
    project_id = str(uuid.uuid4())
    key = new_api_key()
    database.create_project(project_id, name, key.key_id, key.secret_hash)
    return {"projectId": project_id, "apiKey": key.api_key}


def dev_project(settings: Settings, database: Database) -> dict[str, str]:
    """The development project of `make run`, created once; its id and API key are kept
    in DATA_DIR/dev-project.json (mode 0600: the database only has the key's hash)."""
    path = settings.data_dir / DEV_PROJECT_FILE
    if path.exists():
        saved = _read_private(path)
        if database.get_project(saved.get("projectId", "")) is not None:
            return {"projectId": saved["projectId"], "apiKey": saved["apiKey"]}
    project = create_project(database, "development")
    _write_private(path, project)
    return project


def dev_project_banner(settings: Settings) -> list[str]:
    """What `onair run` prints about the development project: its id and key when
    ONAIR_DEV_PROJECT is true (the default), else how to create a project."""
    if not settings.dev_project:
        if (settings.data_dir / DEV_PROJECT_FILE).exists():
            logger.warning(
                "ONAIR_DEV_PROJECT=false, but %s still holds a development project's key;"
                " delete it if that key must not be kept",
                settings.data_dir / DEV_PROJECT_FILE,
            )
        return [
            "No development project (ONAIR_DEV_PROJECT=false): create one with"
            " `onair project create NAME`"
        ]
    database = Database(settings.db_path)
    try:
        project = dev_project(settings, database)
    finally:
        database.close()
    return [
        f"Development project:  {project['projectId']}",
        f"Development API key:  {project['apiKey']}",
    ]


def with_s3_credentials(settings: Settings) -> Settings:
    """For the embedded S3 without configured keys: generate them once, keep them private."""
    if not settings.embedded_s3 or settings.s3_access_key is not None:
        return settings
    path = settings.data_dir / S3_CREDENTIALS_FILE
    if path.exists():
        saved = _read_private(path)
    else:
        saved = {
            "accessKey": "onair-" + secrets.token_hex(8),
            "secretKey": secrets.token_urlsafe(30),
        }
        _write_private(path, saved)
    return replace(settings, s3_access_key=saved["accessKey"], s3_secret_key=saved["secretKey"])


def s3_endpoint(settings: Settings) -> str:
    return settings.s3_endpoint or f"http://127.0.0.1:{settings.s3_port}"


async def serve(settings: Settings, *, embedded: EmbeddedS3 | None = None) -> None:
    """Run the service until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    # No access log; were one turned on, it names routes, not paths (stream keys).
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, access_log_class=RouteAccessLogger
    )
    await runner.setup()
    # Not web.TCPSite: this listener bounds the open connections (total and per IP).
    # The header deadline is the app's (create_app's handler_args).
    try:
        listener = await listen_http(runner, settings.http_host, settings.http_port)
    except BaseException:
        await runner.cleanup()
        raise

    dev_lines = dev_project_banner(settings)
    api = f"http://{settings.http_host}:{settings.http_port}"
    print(
        "\n".join(
            [
                f"onair is up. API:      {api}  (OpenAPI: {api}/api/openapi.json)",
                f"RTMP (OBS 'Server'):  rtmp://{settings.public_host}:{settings.rtmp_port}/live/",
                f"S3:                   {s3_endpoint(settings)}"
                + (" (embedded SeaweedFS)" if embedded else ""),
                *dev_lines,
                "Ctrl-C stops the service" + (" and SeaweedFS." if embedded else "."),
            ]
        ),
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        listener.close()
        await runner.cleanup()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_run(settings: Settings) -> int:
    # Until the event loop takes over, SIGTERM behaves like Ctrl-C, so that a stop
    # during start-up still reaches the `finally` that stops SeaweedFS.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(settings)
    except KeyboardInterrupt:
        return 0


def _run(settings: Settings) -> int:
    secure_data_dir(settings.data_dir)  # 0700 before anything secret is written in it
    settings = with_s3_credentials(settings)
    embedded: EmbeddedS3 | None = None
    if settings.embedded_s3:
        assert settings.s3_access_key and settings.s3_secret_key
        embedded = EmbeddedS3(
            settings.data_dir / "seaweedfs",
            settings.s3_port,
            settings.s3_access_key,
            settings.s3_secret_key,
        )
        try:
            print(f"starting embedded S3 (SeaweedFS) on port {settings.s3_port} ...", flush=True)
            embedded.start()
        except S3ServerError as exc:
            print(f"onair: {exc}", file=sys.stderr)
            return 1
    try:
        asyncio.run(serve(settings, embedded=embedded))
    except OSError as exc:
        print(f"onair: cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
            print("SeaweedFS stopped.", flush=True)
    return 0


def cmd_project_create(settings: Settings, name: str) -> int:
    if not name.strip():
        print("onair: the project name must not be empty", file=sys.stderr)
        return 2
    database = Database(settings.db_path)
    try:
        print(json.dumps(create_project(database, name.strip())))
    finally:
        database.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onair", description="onair live encoding service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the service (and the embedded S3 unless ONAIR_S3_ENDPOINT)")
    project = sub.add_parser("project", help="manage projects")
    project_sub = project.add_subparsers(dest="project_command", required=True)
    create = project_sub.add_parser("create", help="create a project; prints its id and API key")
    create.add_argument("name")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"onair: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.command == "run":
        return cmd_run(settings)
    return cmd_project_create(settings, args.name)


if __name__ == "__main__":
    sys.exit(main())
