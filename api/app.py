"""The service's one app factory, `create_app(settings)`: the control API, the RTMP
ingest and every live job's pipeline on one event loop; its middlewares and shared
state (typed `web.AppKey`s, work started and stopped in `cleanup_ctx`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from ingest.connlimit import ConnectionLimiter, GatedProtocol, is_loopback
from ingest.hls.push import HlsPushServer
from ingest.ratelog import RateLimitedLog
from ingest.rtmp.server import RtmpServer
from ingest.srt import SrtAccess, SrtServer
from ingest.srt.libsrt import SrtError
from packager.object_store import S3Storage
from restream.forwarder import Destination

from .auth import authenticate
from .console import console_routes
from .database import Database
from .errors import Forbidden, JobNotFound, Unauthorized, ValidationFailed
from .health import HEALTH_CACHE_SECONDS, HEALTH_KEY, HealthChecks, StoragePing
from .hosts import Hosts
from .lives import LiveJobs, capacity_units
from .openapi import JSON, PathParameter, Route, openapi_document
from .present import envelope
from .restreams.service import Restreams, live_state
from .restreams.views import RESTREAMS_KEY
from .settings import Settings
from .videos.service import Videos
from .videos.views import VIDEOS_KEY
from .viewers import VIEWERS_KEY, NewToken, Viewers, ViewerToken, create_token, websocket_play
from .views import BASE, JOB, LIVE_JOBS_KEY, ROUTES, SETTINGS_KEY
from .webhooks.sender import WebhookSender

logger = logging.getLogger(__name__)

DATABASE_KEY = web.AppKey("database", Database)
RTMP_KEY = web.AppKey("rtmp", RtmpServer)  # the RTMP ingest server (admits through LiveJobs)
PROJECT_KEY = web.RequestKey("project_id", str)  # the authenticated project
STORAGE_PING_KEY: web.AppKey[StoragePing] = web.AppKey("storage_ping")
METRICS_KEY = web.AppKey("metrics", CollectorRegistry)
WEBHOOKS_KEY = web.AppKey("webhooks", WebhookSender)  # delivers the store's webhook queue
HOSTS_KEY = web.AppKey("hosts", Hosts)  # this host's registration, heartbeat and leases
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_PATHS = ("/healthz", "/metrics", "/api/openapi.json")

# A client has this long for a request's line and headers (from connecting, or from the
# previous response on a kept-alive connection; an idle kept-alive connection is closed
# after as long), then as long again for its body (else 408, and the connection is
# closed after at most as long again). aiohttp's default is 3630 s for the headers and
# no limit for a body.
REQUEST_READ_TIMEOUT_SECONDS = 10.0
# Connections the control API keeps open, in total and from one address; more are
# closed at once (`listen_http`). With the RTMP port's 64 pending and the sockets a
# burst holds for an instant (up to 2 x 128 per port), this fits `ulimit -n` 1024.
HTTP_MAX_CONNECTIONS = 128
HTTP_MAX_CONNECTIONS_PER_IP = 32


def route_template(request: web.BaseRequest) -> str:
    """The route a request matched (`.../livejobs/{id}`), for logs: never the path itself,
    which can carry a stream key (`POST .../livejobs/<key>`)."""
    # Not `request.match_info`: it asserts, and a request that failed before routing
    # (a malformed one reaching the access log) has none.
    match_info = getattr(request, "_match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "(no route)"


class RouteAccessLogger(AbstractAccessLogger):
    """An access log that names the route template instead of the requested path."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.3f s", request.method, route_template(request), response.status, time
        )


def _error_response(status: int, message: str) -> web.Response:
    return envelope(None, status=status, errors=[message])


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in the envelope, with the status the reference documents."""
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return envelope(None, status=400, errors=exc.errors)
    except Unauthorized as exc:
        response = _error_response(401, str(exc))
        response.headers["WWW-Authenticate"] = 'Bearer realm="onair"'
        return response
    except Forbidden as exc:
        return _error_response(403, str(exc))
    except JobNotFound as exc:
        return _error_response(404, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason or exc.text or "error"
        if exc.status == 404 and exc.reason == "Not Found":
            message = f"no such endpoint: {request.method} {request.path}"
        response = _error_response(exc.status, message)
        for header in ("Allow",):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, route_template(request))
        return _error_response(500, "internal server error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api call carries a project's key and touches only that project."""
    if request.path in PUBLIC_PATHS or not request.path.startswith("/api/"):
        return await handler(request)
    if (request.method, route_template(request)) in PUBLIC_ROUTES:
        return await handler(request)  # its own credential (a private video's token)
    if route_template(request) in TOKEN_ROUTES and "token" in request.query:
        project_id = request.match_info["projectId"]
        job = await request.app[LIVE_JOBS_KEY].get(project_id, request.match_info["id"])
        problem = await request.app[VIEWERS_KEY].token_problem(
            job, "events", request.query["token"]
        )
        if problem is not None:
            raise Forbidden(f"telemetry refused: {problem}")
        request[PROJECT_KEY] = project_id
        return await handler(request)
    project_id = await authenticate(request.app[DATABASE_KEY], request.headers)
    path_project = request.match_info.get("projectId")
    if path_project is not None and path_project != project_id:
        raise Forbidden("this API key does not give access to that project")
    request[PROJECT_KEY] = project_id
    return await handler(request)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SETTINGS_KEY], APP_ROUTES))


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# Everything the app serves: the API's routes and its own.
APP_ROUTES = (
    *ROUTES,
    Route(
        "POST",
        f"{BASE}/livejobs/{{id}}/tokens",
        create_token,
        "A short-lived token for a browser: purpose view (the job's WebSocket viewing,"
        " required when viewerTokenRequired) or events (its telemetry socket, instead of"
        " the key header a browser cannot send)",
        ViewerToken,
        status=201,
        body=NewToken,
        parameters=JOB,
        errors=(404,),
    ),
    Route(
        "GET",
        "/websocketplay/{name}",
        websocket_play,
        "WebSocket (webSocketConnection): the live as MPEG-TS for mpegts.js, binary"
        " messages; ?rendition=source or a rendition's name (default the top one);"
        " ?token= when the job says viewerTokenRequired. 404 no such live, 403 a token"
        " refused, 409 not live, 503 at the viewers' limit",
        status=101,
        public=True,
        errors=(400, 403, 404, 409, 503),
        parameters={"name": PathParameter("The live job's name (its public UUID)")},
    ),
    Route("GET", "/metrics", metrics, "Prometheus metrics", public=True, media_type="text/plain"),
    Route("GET", "/api/openapi.json", openapi, "This document", public=True, media_type=JSON),
)
# Routes whose `?token=` (`api.viewers`) stands in for the API key: a browser's socket.
TOKEN_ROUTES = frozenset({f"{BASE}/livejobs/{{id}}/events"})
# Routes under /api/ that take no API key (a private video's playlist: its token).
PUBLIC_ROUTES = frozenset(
    (method, r.path) for r in APP_ROUTES if r.public for method in (r.method, "HEAD")
)


def body_deadline(timeout_seconds: float) -> Middleware:
    """A middleware reading a request's body within `timeout_seconds` (408 after)."""

    @web.middleware
    async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout_seconds):
                    await request.read()  # kept: the handler's request.text() reuses it
            except TimeoutError:
                reason = f"request body not received within {timeout_seconds:g} s"
                raise web.HTTPRequestTimeout(reason=reason) from None
        return await handler(request)

    return read_body_in_time


def storage_for(settings: Settings) -> S3Storage:
    """The object store the settings name (the embedded SeaweedFS by default)."""
    return S3Storage(
        settings.s3_endpoint or f"http://127.0.0.1:{settings.s3_port}",
        settings.s3_access_key,
        settings.s3_secret_key,
        settings.s3_region,
    )


def create_app(
    settings: Settings,
    *,
    object_store: S3Storage | None = None,
    storage_ping: StoragePing | None = None,
    request_read_timeout_seconds: float = REQUEST_READ_TIMEOUT_SECONDS,
    health_cache_seconds: float = HEALTH_CACHE_SECONDS,
) -> web.Application:
    """The service (`onair run`, the tests and the benchmarks): the control API, the RTMP
    ingest and the live jobs' pipelines (`LiveJobs`).

    `object_store` is where the media goes (default: `storage_for(settings)`);
    `storage_ping` what /healthz asks it (default: its `ping`).
    """
    media_store = object_store if object_store is not None else storage_for(settings)
    ping = storage_ping if storage_ping is not None else media_store.ping
    app = web.Application(
        middlewares=[
            error_middleware,
            auth_middleware,
            body_deadline(request_read_timeout_seconds),
        ],
        client_max_size=1 << 20,
        # aiohttp's keep-alive timer runs from the connection's start and from each
        # response until the next request's headers are complete: a header deadline.
        # Lingering (reading what is left of a body the handler did not read, before
        # closing) gets as long. In handler_args, they hold for every runner (onair
        # run's, the tests' TestServer).
        handler_args={
            "keepalive_timeout": request_read_timeout_seconds,
            "lingering_time": request_read_timeout_seconds,
        },
    )
    app[SETTINGS_KEY] = settings
    app[STORAGE_PING_KEY] = ping
    app[HEALTH_KEY] = HealthChecks(
        lambda: app[DATABASE_KEY], ping, max_age_seconds=health_cache_seconds
    )
    registry = CollectorRegistry()
    app[METRICS_KEY] = registry
    requests_total = Counter(
        "onair_http_requests", "Control API requests", ["method", "status"], registry=registry
    )

    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        requests_total.labels(request.method, str(response.status)).inc()
        return response

    app.middlewares.insert(0, count_requests)

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        database = Database.for_settings(settings)
        app[DATABASE_KEY] = database
        hosts = Hosts(database, settings)
        try:
            encoder_id = await hosts.register(capacity_units(settings))
        except BaseException:
            database.close()
            raise
        here = replace(settings, encoder_id=encoder_id)  # this host's, from the store
        app[SETTINGS_KEY] = here
        app[HOSTS_KEY] = hosts
        lives = LiveJobs(here, database, media_store, registry, hosts)
        app[LIVE_JOBS_KEY] = lives
        rtmp = RtmpServer(
            lives.admit,
            host=settings.rtmp_host,
            port=settings.rtmp_port,
            max_pending=settings.rtmp_max_pending,
            max_pending_per_ip=settings.rtmp_max_pending_per_ip,
            proxy_protocol=settings.proxy_protocol,
        )
        app[RTMP_KEY] = rtmp

        async def srt_access(stream_key: str) -> SrtAccess:
            return SrtAccess(passphrase=await lives.srt_passphrase(stream_key))

        srt = SrtServer(
            lives.admit,
            srt_access,
            host=settings.srt_host,
            port=settings.srt_port,
            latency_ms=settings.srt_latency_ms,
        )
        hls_push = HlsPushServer(
            lives.admit,
            host=settings.hls_ingest_host,
            port=settings.hls_ingest_port,
            proxy_protocol=settings.proxy_protocol,
        )
        connections = Gauge(
            "onair_rtmp_connections",
            "RTMP connections: pending (not published yet) or publishing",
            ["state"],
            registry=registry,
        )
        connections.labels("pending").set_function(lambda: rtmp.pending_count)
        connections.labels("publishing").set_function(
            lambda: max(0, rtmp.connection_count - rtmp.pending_count)
        )
        webhooks = WebhookSender(
            database,
            settings.outbound,
            registry,
            retry_initial_seconds=settings.webhook_retry_initial_seconds,
            retry_hours=settings.webhook_retry_hours,
        )
        app[WEBHOOKS_KEY] = webhooks
        presigner = S3Storage(
            settings.storage_base_url,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_region,
        )
        videos = Videos(here, database, lives, media_store, presigner)
        app[VIDEOS_KEY] = videos
        app[VIEWERS_KEY] = Viewers(settings, lives, videos.store, registry)
        restreams = Restreams(database, lives, settings.outbound)
        app[RESTREAMS_KEY] = restreams

        async def destinations(job_id: int) -> list[Destination]:
            targets = await restreams.enabled_for_job(job_id)
            return [Destination(t.id, t.title, t.stream_url, t.stream_key) for t in targets]

        lives.use_restreams(destinations)
        restreams.attach_runtime(
            states=lambda job_id: {
                rid: live_state(status) for rid, status in lives.restream_statuses(job_id).items()
            },
            on_change=lives.update_restreams,
        )
        try:
            await lives.start()
            await hosts.start()
            await rtmp.start()
            await hls_push.start()
            try:
                await srt.start()
            except SrtError as error:
                if error.call != "load":
                    raise
                # Without libsrt (Debian's libsrt1.5-openssl, which `make run` installs)
                # the other ingests serve on; SRT publishers find nothing listening.
                logger.error("SRT ingest disabled: %s", error)
            await webhooks.start()
            await videos.start()
            await restreams.start()
        except BaseException:
            await restreams.stop()
            await asyncio.gather(rtmp.stop(), hls_push.stop(), srt.stop())
            await asyncio.gather(lives.stop(), webhooks.stop(), videos.close())
            await hosts.stop()
            database.close()
            raise
        logger.info("RTMP ingest listening on %s:%s", settings.rtmp_host, rtmp.port)
        logger.info("SRT ingest listening on %s:%s (UDP)", settings.srt_host, srt.port)
        logger.info(
            "HLS push ingest listening on http://%s:%s/hls/",
            settings.hls_ingest_host,
            hls_push.port,
        )
        yield
        await app[HEALTH_KEY].close()
        await restreams.stop()
        # No new publisher, every session closed.
        await asyncio.gather(rtmp.stop(), hls_push.stop(), srt.stop())
        # The lives finish (bounded) while the sender stops (bounded): events they
        # queue now are delivered after the next start, or by another host.
        # Cuts are cancelled (bounded) and resume at the next start.
        try:
            await asyncio.gather(lives.stop(), webhooks.stop(), videos.close())
        finally:
            await hosts.stop()  # the leases were released as the lives finished
            database.close()

    app.cleanup_ctx.append(service_ctx)
    app.router.add_routes(web.route(r.method, r.path, r.handler) for r in APP_ROUTES)
    console_routes(app)  # the web console's static files, at /console
    return app


class HttpListener:
    """The control API's listening socket, with bounded connections (see `listen_http`)."""

    def __init__(self, server: asyncio.Server, limiter: ConnectionLimiter) -> None:
        self.server = server
        self.limiter = limiter

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop listening; open connections are the runner's (`runner.cleanup()`)."""
        self.server.close()


async def listen_http(
    runner: web.BaseRunner,
    host: str,
    port: int,
    *,
    max_connections: int = HTTP_MAX_CONNECTIONS,
    max_connections_per_ip: int = HTTP_MAX_CONNECTIONS_PER_IP,
    per_ip_exempt_loopback: bool = True,
    backlog: int = 128,
) -> HttpListener:
    """Serve `runner` (after `setup()`) on host:port, like `web.TCPSite`, but a connection
    past `max_connections` in total or `max_connections_per_ip` from one address (not
    for loopback peers) is closed at accept, before aiohttp sees it (logged
    rate-limited)."""
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() first")
    limiter = ConnectionLimiter(
        max_connections,
        max_connections_per_ip,
        # A reverse proxy on this host makes every client 127.0.0.1: only the total.
        per_address_exempt=is_loopback if per_ip_exempt_loopback else None,
    )
    refusals = RateLimitedLog(logger, prefix="[http] ")

    def on_refused(transport: asyncio.BaseTransport, address: str) -> None:
        reason = limiter.refusal_reason(address, "open connections")
        refusals.log("over the limit", logging.WARNING, "[http %s] refused: %s", address, reason)
        refusals.flush()

    def gate() -> asyncio.Protocol:
        return GatedProtocol(limiter, lambda _slot: server(), on_refused)

    loop = asyncio.get_running_loop()
    listening = await loop.create_server(gate, host, port, backlog=backlog)
    return HttpListener(listening, limiter)
