"""The aiohttp application: `create_app(settings)`, its middlewares and shared state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from .auth import authenticate
from .errors import Forbidden, JobNotFound, Unauthorized, ValidationFailed
from .jobs import JobManager
from .openapi import openapi_document
from .present import envelope
from .settings import Settings
from .store import Store
from .views import JOBS_KEY, SETTINGS_KEY, routes

logger = logging.getLogger(__name__)

STORE_KEY = web.AppKey("store", Store)
PROJECT_KEY = web.RequestKey("project_id", str)  # the authenticated project
StoragePing = Callable[[], bool]
STORAGE_PING_KEY: web.AppKey[StoragePing] = web.AppKey("storage_ping")
METRICS_KEY = web.AppKey("metrics", CollectorRegistry)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_PATHS = ("/healthz", "/metrics", "/api/openapi.json")


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
    project_id = await authenticate(request.app[STORE_KEY], request.headers)
    path_project = request.match_info.get("projectId")
    if path_project is not None and path_project != project_id:
        raise Forbidden("this API key does not give access to that project")
    request[PROJECT_KEY] = project_id
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    store_ok = await request.app[STORE_KEY].call(request.app[STORE_KEY].ping)
    storage_ok = await asyncio.to_thread(request.app[STORAGE_PING_KEY])
    checks = {"store": store_ok, "storage": storage_ok}
    status = 200 if all(checks.values()) else 503
    errors = [f"{name} does not answer" for name, ok in checks.items() if not ok]
    return envelope(checks, status=status, errors=errors)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SETTINGS_KEY]))


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: Settings,
    *,
    storage_ping: StoragePing,
    runtime_factory: Callable[[web.Application], Any] | None = None,
) -> web.Application:
    """The control API. `runtime_factory(app)` attaches the media runtime (ingest, pipelines)."""
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=1 << 20)
    app[SETTINGS_KEY] = settings
    app[STORAGE_PING_KEY] = storage_ping
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

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = Store(settings.db_path)
        app[STORE_KEY] = store
        jobs = JobManager(settings, store)
        app[JOBS_KEY] = jobs
        await jobs.restore()
        runtime = runtime_factory(app) if runtime_factory else None
        if runtime is not None:
            jobs.runtime = runtime
            await runtime.start()
        yield
        if runtime is not None:
            await runtime.stop()
        store.close()

    app.cleanup_ctx.append(store_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_routes(routes)
    return app
