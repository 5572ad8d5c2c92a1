"""The `onair` command: `onair run` (the service), `onair project create NAME` and
`onair project rotate-webhook-secret PROJECT_ID`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from packager.s3server import EmbeddedS3, S3ServerError

from .app import RouteAccessLogger, create_app, listen_http
from .database import Database, restrict_mode, secure_data_dir
from .database.engines import shown
from .database.store import utc_at
from .hosts import HostRefused
from .keys import new_api_key
from .settings import ConfigError, Settings, load_settings
from .views import LIVE_JOBS_KEY
from .webhooks.signing import new_webhook_secret

logger = logging.getLogger("onair")

DEV_PROJECT_FILE = "dev-project.json"
S3_CREDENTIALS_FILE = "s3-credentials.json"
PRIVATE_FILE_MODE = 0o600
# After `onair project rotate-webhook-secret`, the previous secret signs too, this long.
WEBHOOK_SECRET_GRACE_HOURS = 24.0


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
    """A new project, its API key (shown once: only its hash is stored) and its webhook
    signing secret (`whsec_...`; the store keeps it, it must sign)."""
    project_id = str(uuid.uuid4())
    key = new_api_key()
    secret = new_webhook_secret()
    database.create_project(project_id, name, key.key_id, key.secret_hash, secret)
    return {"projectId": project_id, "apiKey": key.api_key, "webhookSecret": secret}


def rotate_webhook_secret(
    database: Database, project_id: str, grace_hours: float, now_unix: float
) -> dict[str, str] | None:
    """A new webhook secret for the project; the previous one signs too for
    `grace_hours` (both signatures are sent). None if there is no such project."""
    secret = new_webhook_secret()
    until = utc_at(now_unix + grace_hours * 3600.0)
    if not database.rotate_webhook_secret(project_id, secret, until):
        return None
    return {"projectId": project_id, "webhookSecret": secret, "previousSecretValidUntil": until}


def dev_project(settings: Settings, database: Database) -> dict[str, str]:
    """The development project of `make run`, created once; its id and API key are kept
    in DATA_DIR/dev-project.json (mode 0600: the database only has the key's hash)."""
    path = settings.data_dir / DEV_PROJECT_FILE
    if path.exists():
        saved = _read_private(path)
        found = database.get_project(saved.get("projectId", ""))
        if found is not None:
            # The store's secret: it may have been rotated since the file was written.
            project = {
                "projectId": saved["projectId"],
                "apiKey": saved["apiKey"],
                "webhookSecret": found["webhook_secret"] or "",
            }
            if saved != project:
                _write_private(path, project)
            return project
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
    database = Database.for_settings(settings)
    try:
        project = dev_project(settings, database)
    finally:
        database.close()
    return [
        f"Development project:  {project['projectId']}",
        f"Development API key:  {project['apiKey']}",
        f"Development webhook secret:  {project['webhookSecret']}",
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
                f"SRT:                  srt://{settings.public_host}:{settings.srt_port}"
                "?streamid=#!::r=live/{key},m=publish",
                f"HLS push:             http://{settings.public_host}:{settings.hls_ingest_port}"
                "/hls/{key}/index.m3u8",
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
        # A pod stopping: its lives go on for ONAIR_DRAIN_SECONDS, admitting nobody new,
        # then end and release their leases (the cleanup below) for the next host.
        await app[LIVE_JOBS_KEY].drain(settings.drain_seconds)
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
    except SQLAlchemyError as exc:
        print(store_error(settings, exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"onair: cannot start: {exc}", file=sys.stderr)
        return 1
    except HostRefused as exc:
        print(f"onair: cannot start: {exc}", file=sys.stderr)
        return 2
    finally:
        if embedded is not None:
            embedded.stop()
            print("SeaweedFS stopped.", flush=True)
    return 0


def store_error(settings: Settings, exc: SQLAlchemyError) -> str:
    """One line for a store that cannot be opened: the driver's first line, never the
    URL's password nor SQLAlchemy's statement and background link."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    text = lines[0]
    if settings.database_url:
        password = make_url(settings.database_url).password
        if password:
            text = text.replace(str(password), "***")
        where = f"PostgreSQL at {shown(settings.database_url)}"
    else:
        where = f"SQLite at {settings.db_path}"
    return f"onair: cannot open the store ({where}): {text}"


def _open_store(settings: Settings) -> Database | None:
    try:
        return Database.for_settings(settings)
    except SQLAlchemyError as exc:
        print(store_error(settings, exc), file=sys.stderr)
        return None


def cmd_project_create(settings: Settings, name: str) -> int:
    if not name.strip():
        print("onair: the project name must not be empty", file=sys.stderr)
        return 2
    database = _open_store(settings)
    if database is None:
        return 1
    try:
        print(json.dumps(create_project(database, name.strip())))
    finally:
        database.close()
    return 0


def cmd_rotate_webhook_secret(settings: Settings, project_id: str, grace_hours: float) -> int:
    if not 0 <= grace_hours <= 24 * 365:
        print("onair: --grace-hours must be between 0 and 8760", file=sys.stderr)
        return 2
    database = _open_store(settings)
    if database is None:
        return 1
    try:
        rotated = rotate_webhook_secret(database, project_id, grace_hours, time.time())
    finally:
        database.close()
    if rotated is None:
        print(f"onair: no project {project_id}", file=sys.stderr)
        return 1
    print(json.dumps(rotated))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onair", description="onair live encoding service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the service (and the embedded S3 unless ONAIR_S3_ENDPOINT)")
    project = sub.add_parser("project", help="manage projects")
    project_sub = project.add_subparsers(dest="project_command", required=True)
    create = project_sub.add_parser(
        "create", help="create a project; prints its id, API key and webhook secret"
    )
    create.add_argument("name")
    rotate = project_sub.add_parser(
        "rotate-webhook-secret",
        help="a new webhook signing secret; the previous one signs too for a grace period",
    )
    rotate.add_argument("project_id", metavar="PROJECT_ID")
    rotate.add_argument(
        "--grace-hours",
        type=float,
        default=WEBHOOK_SECRET_GRACE_HOURS,
        help="how long the previous secret still signs (default %(default)g)",
    )
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
    if args.project_command == "rotate-webhook-secret":
        return cmd_rotate_webhook_secret(settings, args.project_id, args.grace_hours)
    return cmd_project_create(settings, args.name)


if __name__ == "__main__":
    sys.exit(main())
