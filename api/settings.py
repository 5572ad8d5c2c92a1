"""Configuration: `ONAIR_*` environment variables, validated once into a frozen object."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from media.outbound import OutboundConfigError, OutboundPolicy

from .validation import bucket_name_problem


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line naming the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Units are in the names."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    rtmp_host: str = "0.0.0.0"
    rtmp_port: int = 1935
    rtmp_max_pending: int = 64  # RTMP connections not publishing yet, in total
    rtmp_max_pending_per_ip: int = 8  # ... and from one remote IP
    srt_port: int = 9000
    srt_host: str = "0.0.0.0"
    srt_latency_ms: int = 120
    hls_ingest_host: str = "0.0.0.0"
    hls_ingest_port: int = 8088
    # Behind a TCP load balancer: the RTMP and HLS push listeners read its PROXY
    # protocol header (v1 or v2) first and take the client it names as the remote.
    proxy_protocol: bool = False
    data_dir: Path = Path("./data")
    # None: SQLite in data_dir. Never in a repr: it may hold the database's password.
    database_url: str | None = field(default=None, repr=False)
    s3_endpoint: str | None = None  # None: start the embedded SeaweedFS
    s3_access_key: str | None = None  # None with the embedded S3: generated, kept in data_dir
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_port: int = 8333
    s3_public_url: str | None = None  # base of storage URLs handed to players
    s3_buckets: tuple[str, ...] | None = None  # the operator's allow-list; None: any bucket
    public_host: str = "127.0.0.1"
    cdn_base_url: str | None = None
    reconnect_window_seconds: float = 30.0
    dvr_window_seconds: float = 7200.0  # the DVR playlists' sliding window
    encoder_id: int | None = None  # None: given by the store at registration (`api.hosts`)
    host_name: str | None = None  # None: hostname:http_port
    internal_url: str | None = None  # where the other hosts reach this one's API
    drain_seconds: float = 0.0  # SIGTERM: the running lives go on this long, none admitted
    log_level: str = "INFO"
    max_input_pixels: int = 1920 * 1080  # larger sources are refused
    capacity: float | None = None  # in template-2 720p lives; None: measured default
    spool_max_bytes_per_job: int = 2 * 1024**3
    spool_max_bytes: int = 8 * 1024**3  # every job's spool together
    dev_project: bool = True  # `onair run` creates and prints a development project
    # Connections to user-supplied addresses (webhooks): ONAIR_OUTBOUND_* (media.outbound)
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    # Webhooks: a failed delivery is tried again after at most this, doubling (full
    # jitter, capped at 1 h), until its event is webhook_retry_hours old.
    webhook_retry_initial_seconds: float = 5.0
    webhook_retry_hours: float = 24.0
    # Private videos: how long a presigned storage URL (a segment, the MP4) works, and
    # how long a playback URL (onair's playlist, its signed token) does.
    presign_seconds: int = 3600
    playback_token_seconds: int = 86400
    # What a restream sends while its publisher is away (within the reconnect window):
    # this image, or else the last picture, with silence.
    restream_slate_image: Path | None = None
    # What a job's outputs carry once its input is lost (no media for the job's
    # inputLossThresholdMs, and no other input to take): the last picture, repeated for
    # this long, then a slate: this image, or else a plain frame with the job's name.
    input_loss_repeat_ms: int = 1000
    input_slate_image: Path | None = None
    # Where viewers reach this service (behind a TLS proxy: https://..., giving wss://
    # WebSocket URLs); None: http://{public_host}:{http_port}.
    public_url: str | None = None
    # WebSocket viewers (`api.viewers`): at most this many per live and per host; a
    # viewer token works this long.
    viewers_per_live: int = 50
    viewers_per_host: int = 500
    viewer_token_seconds: int = 300
    viewer_max_pending_bytes: int = 8 * 1024 * 1024  # unsent to one viewer: too slow past it

    @property
    def public_base_url(self) -> str:
        """Where viewers reach the HTTP service (no trailing slash)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.public_host}:{self.http_port}"

    @property
    def websocket_base_url(self) -> str:
        """`public_base_url` as a WebSocket URL: wss behind TLS, ws otherwise."""
        base = self.public_base_url
        return ("wss" + base[5:]) if base.startswith("https") else ("ws" + base[4:])

    @property
    def embedded_s3(self) -> bool:
        return self.s3_endpoint is None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "onair.sqlite3"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def storage_base_url(self) -> str:
        """Where objects are reachable by players: `{base}/{bucket}/{key}` (path style)."""
        if self.s3_public_url:
            return self.s3_public_url.rstrip("/")
        if self.s3_endpoint:
            return self.s3_endpoint.rstrip("/")
        return f"http://{self.public_host}:{self.s3_port}"


ENV_PREFIX = "ONAIR_"

# variable suffix -> (field, description) — the README table is written from this.
DOCUMENTED: dict[str, str] = {
    "HTTP_HOST": "Address the control API listens on",
    "HTTP_PORT": "Port of the control API",
    "RTMP_HOST": "Address the RTMP ingest listens on",
    "RTMP_PORT": "Port of the RTMP ingest (one port for every live job)",
    "RTMP_MAX_PENDING": "RTMP connections not yet publishing, in total; more are closed at once",
    "RTMP_MAX_PENDING_PER_IP": "RTMP connections not yet publishing from one IP address",
    "SRT_PORT": "UDP port of the SRT ingest (one port for every SRT job)",
    "SRT_HOST": "Address the SRT ingest listens on",
    "SRT_LATENCY_MS": "SRT receive latency in milliseconds (the publisher's own may be higher)",
    "HLS_INGEST_HOST": "Address the HLS push ingest listens on",
    "HLS_INGEST_PORT": "Port of the HLS push ingest (http://host:port/hls/{key}/index.m3u8)",
    "PROXY_PROTOCOL": "true: every RTMP and HLS push connection starts with a PROXY protocol"
    " header (v1 or v2) from a load balancer, whose client address is the publisher's",
    "DATA_DIR": "State: SQLite store, upload spool, embedded S3 data",
    "DATABASE_URL": "PostgreSQL store, postgresql://user:password@host:port/database"
    " (unset: SQLite in DATA_DIR)",
    "S3_ENDPOINT": "S3 endpoint URL; unset starts the embedded SeaweedFS",
    "S3_ACCESS_KEY": "S3 access key (generated and kept in DATA_DIR for the embedded S3)",
    "S3_SECRET_KEY": "S3 secret key (generated likewise)",
    "S3_REGION": "S3 region",
    "S3_PORT": "Port of the embedded S3; its other ports are derived from it",
    "S3_PUBLIC_URL": "Base URL of stored objects for players (default: the S3 endpoint)",
    "S3_BUCKETS": "Comma-separated allow-list of buckets jobs may use (unset: any bucket)",
    "PUBLIC_HOST": "Host name put in rtmpServer, playback and storage URLs",
    "CDN_BASE_URL": "Base URL of a CDN in front of the S3 public URL (jobs with cdnDistribution)",
    "RECONNECT_WINDOW_SECONDS": "How long an interrupted job waits for its publisher to return",
    "DVR_WINDOW_SECONDS": "How far back the DVR playlists (storageDvrMasterFile) reach",
    "ENCODER_ID": "This host's encoder id (outputs' encoderId); unset: the store gives one",
    "DRAIN_SECONDS": "On SIGTERM: how long running lives go on, none admitted, before handover",
    "INTERNAL_URL": "Where the other hosts reach this host's API (default http://host:port)",
    "HOST_NAME": "This host's name among the hosts sharing the store (default hostname:port)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "MAX_INPUT_PIXELS": "Largest source a publisher may send, width x height in pixels",
    "CAPACITY": "Lives this host runs, in template-2 720p lives (default: 1 per CPU core)",
    "SPOOL_MAX_BYTES_PER_JOB": "Upload spool limit of one job, in bytes",
    "SPOOL_MAX_BYTES": "Upload spool limit of every job together, in bytes",
    "DEV_PROJECT": "true: `onair run` creates and prints a development project and its key",
    "OUTBOUND_ALLOW_PRIVATE": "true: webhooks may reach loopback and private addresses (dev)",
    "OUTBOUND_CA_FILE": "PEM file of a CA outbound TLS trusts beside the system store",
    "WEBHOOK_RETRY_INITIAL_SECONDS": "Bound of the first webhook retry's delay; each next"
    " one doubles (full jitter, at most 1 h)",
    "WEBHOOK_RETRY_HOURS": "How long a webhook event is retried before it is given up",
    "PRESIGN_SECONDS": "How long a private video's presigned storage URLs (segments,"
    " originalFile) work",
    "PLAYBACK_TOKEN_SECONDS": "How long a private video's playbackUrl (onair's playlist,"
    " a signed token) works; each playlist request presigns its segments anew",
    "RESTREAM_SLATE_IMAGE": "PNG or JPEG restreams send (with silence) while the publisher"
    " is away within the reconnect window (default: the last picture)",
    "INPUT_LOSS_REPEAT_MS": "How long a job's outputs repeat the last picture once its input"
    " is lost (and no backup takes over), before the slate, in ms",
    "INPUT_SLATE_IMAGE": "PNG or JPEG a job's outputs show once its input is lost, after the"
    " repeated last picture (default: a plain frame with the job's name)",
    "PUBLIC_URL": "Where viewers reach this service, e.g. https://live.example.com behind a"
    " TLS proxy (webSocketConnection is then wss://); default http://PUBLIC_HOST:HTTP_PORT",
    "VIEWERS_PER_LIVE": "WebSocket viewers a live takes at once",
    "VIEWERS_PER_HOST": "WebSocket viewers this host takes at once, every live together",
    "VIEWER_TOKEN_SECONDS": "How long a viewer or telemetry token (POST .../tokens) works",
    "VIEWER_MAX_PENDING_BYTES": "Bytes unsent to one WebSocket viewer past which it is"
    " dropped as too slow",
}

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")


def _port(name: str, value: str) -> int:
    number = _int(name, value)
    if not 1 <= number <= 65535:
        raise ConfigError(f"{name}={value!r}: a port must be between 1 and 65535")
    return number


def _s3_port(name: str, value: str) -> int:
    # The embedded SeaweedFS also listens on this port + 1..3 and + 10000..10003.
    from packager.s3server import GRPC_OFFSET, MAX_S3_PORT

    number = _port(name, value)
    if number > MAX_S3_PORT:
        raise ConfigError(
            f"{name}={value!r}: at most {MAX_S3_PORT} (the embedded S3 also uses this port "
            f"+ {GRPC_OFFSET + 3}, which must stay within 65535)"
        )
    return number


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not an integer") from None


def _host(name: str, value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ConfigError(f"{name}={value!r}: not an IP address or host name")
    return value


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={value!r}: must be an http(s) URL with a host")
    return value.rstrip("/")


def _positive_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not a number") from None
    if not number > 0:
        raise ConfigError(f"{name}={value!r}: must be greater than 0")
    if not math.isfinite(number):
        raise ConfigError(f"{name}={value!r}: must be a finite number")
    return number


def _non_negative_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not a number") from None
    if not (number >= 0 and math.isfinite(number)):
        raise ConfigError(f"{name}={value!r}: must be 0 or more (and finite)")
    return number


def _positive_int(name: str, value: str) -> int:
    number = _int(name, value)
    if number <= 0:
        raise ConfigError(f"{name}={value!r}: must be greater than 0")
    return number


def _non_negative_int(name: str, value: str) -> int:
    number = _int(name, value)
    if number < 0:
        raise ConfigError(f"{name}={value!r}: must be 0 or greater")
    return number


def _image_file(name: str, value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{name}={value!r}: no such file")
    return path


def _nonempty(name: str, value: str) -> str:
    if not value.strip():
        raise ConfigError(f"{name}: must not be empty")
    return value


def _log_level(name: str, value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{name}={value!r}: one of DEBUG, INFO, WARNING, ERROR")
    return level


def _encoder_id(name: str, value: str) -> int:
    number = _int(name, value)
    if not 0 <= number <= 2**31 - 1:
        raise ConfigError(f"{name}={value!r}: must be between 0 and 2147483647")
    return number


def _bucket_list(name: str, value: str) -> tuple[str, ...]:
    buckets: list[str] = []
    for bucket in (b.strip() for b in value.split(",")):
        problem = bucket_name_problem(bucket) if bucket else "empty name"
        if problem is not None:
            raise ConfigError(f"{name}: {bucket!r} is not a valid S3 bucket name: {problem}")
        if bucket not in buckets:
            buckets.append(bucket)
    return tuple(buckets)


def _database_url(name: str, value: str) -> str:
    """A PostgreSQL URL (libpq's `postgresql://` or `postgres://`, or SQLAlchemy's
    `postgresql+psycopg://`); errors never repeat the password."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(
            f"{name}: not a URL (postgresql://user:password@host:port/database)"
        ) from None
    shown = url.render_as_string(hide_password=True)
    if url.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigError(
            f"{name}={shown!r}: only PostgreSQL (postgresql://...); unset it for SQLite"
        )
    if not url.database:
        raise ConfigError(f"{name}={shown!r}: names no database (.../database)")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r}: true or false (also 1/0, yes/no, on/off)")


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "http_host": _host,
    "http_port": _port,
    "rtmp_host": _host,
    "rtmp_port": _port,
    "rtmp_max_pending": _positive_int,
    "rtmp_max_pending_per_ip": _positive_int,
    "srt_port": _port,
    "srt_host": _nonempty,
    "srt_latency_ms": _positive_int,
    "hls_ingest_host": _nonempty,
    "hls_ingest_port": _port,
    "proxy_protocol": _bool,
    "data_dir": lambda _n, v: Path(v),
    "database_url": _database_url,
    "s3_endpoint": _url,
    "s3_access_key": _nonempty,
    "s3_secret_key": _nonempty,
    "s3_region": _nonempty,
    "s3_port": _s3_port,
    "s3_public_url": _url,
    "s3_buckets": _bucket_list,
    "public_host": _host,
    "cdn_base_url": _url,
    "reconnect_window_seconds": _positive_float,
    "dvr_window_seconds": _positive_float,
    "encoder_id": _encoder_id,
    "host_name": _nonempty,
    "internal_url": _url,
    "drain_seconds": _non_negative_float,
    "log_level": _log_level,
    "max_input_pixels": _positive_int,
    "capacity": _positive_float,
    "spool_max_bytes_per_job": _positive_int,
    "spool_max_bytes": _positive_int,
    "dev_project": _bool,
    "webhook_retry_initial_seconds": _positive_float,
    "webhook_retry_hours": _positive_float,
    "presign_seconds": _positive_int,
    "playback_token_seconds": _positive_int,
    "restream_slate_image": _image_file,
    "input_loss_repeat_ms": _non_negative_int,
    "input_slate_image": _image_file,
    "public_url": _url,
    "viewers_per_live": _positive_int,
    "viewers_per_host": _positive_int,
    "viewer_token_seconds": _positive_int,
    "viewer_max_pending_bytes": _positive_int,
}


def _outbound(environ: Mapping[str, str]) -> OutboundPolicy:
    # ONAIR_OUTBOUND_ALLOW_PRIVATE and ONAIR_OUTBOUND_CA_FILE, read by the guard itself
    # (media/ knows nothing of api/), their errors made this module's.
    try:
        return OutboundPolicy.from_env(environ)
    except OutboundConfigError as exc:
        raise ConfigError(str(exc)) from None


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Defaults, then `ONAIR_*` variables, then explicit overrides (tests)."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env_name = ENV_PREFIX + f.name.upper()
        raw = environ.get(env_name)
        if raw is None or raw == "" or f.name not in _PARSERS:
            continue
        values[f.name] = _PARSERS[f.name](env_name, raw)
    values["outbound"] = _outbound(environ)
    values.update(overrides)
    settings = Settings(**values)
    if settings.embedded_s3 and settings.s3_port in (
        settings.http_port,
        settings.rtmp_port,
        settings.hls_ingest_port,
    ):
        raise ConfigError(f"ONAIR_S3_PORT={settings.s3_port}: collides with another onair port")
    if (settings.s3_access_key is None) != (settings.s3_secret_key is None):
        raise ConfigError("ONAIR_S3_ACCESS_KEY and ONAIR_S3_SECRET_KEY: set both or neither")
    return settings
