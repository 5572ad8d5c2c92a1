"""Watching a live over a WebSocket, and the short-lived tokens browsers use.

`GET /websocketplay/{name}` (the job's `webSocketConnection`) upgrades to a WebSocket
that carries the live as MPEG-TS, binary messages, for mpegts.js (`viewer.stream`).
The path takes the job's public `name`, not the reference's stream key: whoever has
the key can publish, and a viewer's URL is seen by every viewer. `?rendition=source`
(the publisher's own packets: the lowest latency) or a rendition's name (default the
ladder's top one). Viewing is public, as the HLS is, unless the job says
`viewerTokenRequired`: then `?token=` from `POST .../livejobs/{id}/tokens` (purpose
`view`). A token given is checked either way (a bad or expired one is refused).

Every refusal comes before the upgrade, in the API's envelope: 404 no such live, 403 a
token refused, 400 an unknown rendition, 409 the live is not on, 503 at the live's or
the host's limit (`ONAIR_VIEWERS_PER_LIVE`, `ONAIR_VIEWERS_PER_HOST`).

A viewer that reads too slowly is ended (close code 1008, "too slow"): its reader of
the fan-out dropped, more than `ONAIR_VIEWER_MAX_PENDING_BYTES` wait unsent, or a send
waited `SEND_TIMEOUT_SECONDS`; it is counted in
`onair_viewers_dropped_total` and never slows the live or another viewer.

Tokens (`purpose` `view` or `events`) are `{expires}.{HMAC}` over the purpose and the
job's name (`api.videos.tokens`, a service secret of its own), valid
`ONAIR_VIEWER_TOKEN_SECONDS`. An `events` token opens the job's telemetry socket
(`.../livejobs/{id}/events?token=`) without the key header a browser cannot send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field

from viewer.stream import SOURCE, TrackChoice, ViewerStream

from .database.store import utc_at
from .errors import Forbidden, JobNotFound, ValidationFailed
from .lives import LiveJobs
from .models import DateTime, ResponseModel
from .present import envelope, json_body
from .relay import relay_websocket, relayed
from .settings import Settings
from .validation import RequestModel, parse
from .videos.store import VideoStore
from .videos.tokens import make_token, token_problem
from .views import LIVE_JOBS_KEY

logger = logging.getLogger(__name__)

TOKEN_SECRET_NAME = "viewer_token_key"
# The kernel's send buffer of a viewer's socket: what a viewer that stops reading holds
# of the host's memory there, before its unsent bytes count (ONAIR_VIEWER_MAX_PENDING_BYTES).
SEND_BUFFER_BYTES = 256 * 1024
CLOSE_SLOW = 1008  # policy violation: the viewer does not keep up
SEND_TIMEOUT_SECONDS = 10.0  # a send that waits this long: the viewer stopped reading


class _Unsent:
    """Bytes handed to the socket side and not sent yet (the viewer's thread adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = 0

    def add(self, count: int) -> int:
        with self._lock:
            self._bytes += count
            return self._bytes


class Viewers:
    """The host's WebSocket viewers: limits, counts, tokens."""

    def __init__(
        self,
        settings: Settings,
        lives: LiveJobs,
        store: VideoStore,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._lives = lives
        self._store = store
        self._clock = clock
        self._secret: str | None = None
        self._by_job: dict[int, int] = {}
        gauge = Gauge("onair_viewers", "WebSocket viewers watching now", registry=registry)
        gauge.set_function(lambda: sum(self._by_job.values()))
        self.ended = Counter(
            "onair_viewers_ended",
            "WebSocket viewers that ended, by why (slow: dropped for reading too slowly)",
            ["reason"],
            registry=registry,
        )

    async def _token_secret(self) -> str:
        if self._secret is None:
            self._secret = await asyncio.to_thread(self._store.secret, TOKEN_SECRET_NAME)
        return self._secret

    async def token(self, job: dict[str, Any], purpose: str) -> tuple[str, int]:
        """A `purpose` token for the job, and the Unix second it expires at."""
        expires = int(self._clock()) + self._settings.viewer_token_seconds
        token = make_token(await self._token_secret(), f"{purpose}:{job['name']}", expires)
        return token, expires

    async def token_problem(self, job: dict[str, Any], purpose: str, token: str) -> str | None:
        return token_problem(
            await self._token_secret(),
            f"{purpose}:{job['name']}",
            token,
            self._clock(),
            what=f"{purpose} token",
            of="of this live",
            renew="ask POST .../livejobs/{id}/tokens for a new one",
        )

    def url(self, job: dict[str, Any], purpose: str, token: str) -> str:
        base = self._settings.websocket_base_url
        if purpose == "view":
            return f"{base}/websocketplay/{job['name']}?token={token}"
        return (
            f"{base}/api/v1/projects/{job['project_id']}/livejobs/{job['id']}/events?token={token}"
        )

    def admit(self, job_id: int) -> str | None:
        """Take a viewer's place (None), or why not."""
        if sum(self._by_job.values()) >= self._settings.viewers_per_host:
            return "this host has as many viewers as it takes: try again later"
        if self._by_job.get(job_id, 0) >= self._settings.viewers_per_live:
            return "this live has as many viewers as it takes: try again later"
        self._by_job[job_id] = self._by_job.get(job_id, 0) + 1
        return None

    def release(self, job_id: int) -> None:
        left = self._by_job.get(job_id, 0) - 1
        if left > 0:
            self._by_job[job_id] = left
        else:
            self._by_job.pop(job_id, None)

    @property
    def max_pending_bytes(self) -> int:
        return self._settings.viewer_max_pending_bytes

    def watching(self, job_id: int) -> int:
        return self._by_job.get(job_id, 0)


VIEWERS_KEY = web.AppKey("viewers", Viewers)


async def websocket_play(request: web.Request) -> web.StreamResponse:
    """The live, as MPEG-TS over a WebSocket (see the module)."""
    viewers = request.app[VIEWERS_KEY]
    lives = request.app[LIVE_JOBS_KEY]
    job = await lives.by_public_name(request.match_info["name"])
    if job is None:
        raise JobNotFound()
    elsewhere = None if relayed(request) else await lives.runs_elsewhere(job)
    if elsewhere is not None:
        return await relay_websocket(request, elsewhere)  # it checks the token there
    token = request.query.get("token")
    if token is not None or job.get("viewer_token_required"):
        problem = await viewers.token_problem(job, "view", token or "")
        if problem is not None:
            raise Forbidden(f"viewing refused: {problem}")
    pipeline = lives.running_pipeline(job)
    if pipeline is None or not job["online"]:
        raise web.HTTPConflict(reason="the live is not on: try again once it is Live")
    renditions = [spec.name for spec in pipeline.template.renditions]
    wanted = request.query.get("rendition") or pipeline.encoder.top_rendition() or SOURCE
    if pipeline.template.passthrough and wanted != SOURCE:
        wanted = SOURCE  # a copy has no rendition of its own: its source is it
    if wanted != SOURCE and wanted not in renditions:
        raise ValidationFailed([f"rendition: one of source, {', '.join(renditions)}"])
    job_id = int(job["id"])
    refused = viewers.admit(job_id)
    if refused is not None:
        raise web.HTTPServiceUnavailable(reason=refused)
    try:
        return await _serve(request, viewers, pipeline, job_id, TrackChoice(wanted))
    finally:
        viewers.release(job_id)


async def _serve(
    request: web.Request, viewers: Viewers, pipeline: Any, job_id: int, choice: TrackChoice
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
    unsent = _Unsent()
    ended: list[str] = []

    def send(chunk: bytes) -> int:  # the viewer's thread
        waiting = unsent.add(len(chunk))
        loop.call_soon_threadsafe(chunks.put_nowait, chunk)
        return waiting

    def abort() -> None:  # a viewer that stopped reading: its socket closed at once
        if request.transport is not None:
            request.transport.abort()

    def on_end(reason: str) -> None:  # the viewer's thread, once
        ended.append(reason)
        with contextlib.suppress(RuntimeError):  # the loop is gone
            loop.call_soon_threadsafe(chunks.put_nowait, None)
            if reason.startswith("too slow"):
                loop.call_soon_threadsafe(abort)

    remote = request.remote or "?"
    stream = ViewerStream(
        choice,
        source=pipeline.source,
        encoded=pipeline.encoder.encoded,
        send=send,
        on_end=on_end,
        name=f"viewer {remote} {id(ws):x}",
        max_pending_bytes=viewers.max_pending_bytes,
    )
    stream.start()
    logger.info("[job %s] viewer %s watching %s", job_id, remote, choice.rendition)

    async def read_client() -> None:
        async for message in ws:  # a viewer says nothing: only its close matters
            if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
        stream.stop()

    reader = asyncio.create_task(read_client())
    try:
        while True:
            chunk = await chunks.get()
            if chunk is None:
                break
            unsent.add(-len(chunk))
            if ws.closed:
                break
            await asyncio.wait_for(ws.send_bytes(chunk), SEND_TIMEOUT_SECONDS)
    except TimeoutError:
        ended.insert(0, f"too slow: nothing taken for {SEND_TIMEOUT_SECONDS:g} s")
        abort()
    except (ConnectionResetError, RuntimeError):
        pass  # the viewer went away
    finally:
        stream.stop()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await asyncio.to_thread(stream.join, 2.0)
    reason = ended[0] if ended else "closed"
    slow = reason.startswith("too slow")
    viewers.ended.labels("slow" if slow else "ended").inc()
    logger.info("[job %s] viewer %s ended: %s", job_id, remote, reason)
    if not ws.closed:
        code = CLOSE_SLOW if slow else WSCloseCode.OK
        await ws.close(code=code, message=reason[:120].encode())
    return ws


class NewToken(RequestModel):
    purpose: Literal["view", "events"] = Field(
        description="view: the job's WebSocket viewing (webSocketConnection); events: its"
        " telemetry socket (.../livejobs/{id}/events)",
    )


class ViewerToken(ResponseModel):
    """A short-lived token, and the socket URL that carries it."""

    token: str
    expires_at: DateTime
    url: str = Field(description="The WebSocket URL with ?token=")


async def create_token(request: web.Request) -> web.Response:
    """A viewer or telemetry token for one of the project's jobs."""
    lives = request.app[LIVE_JOBS_KEY]
    viewers = request.app[VIEWERS_KEY]
    job = await lives.get(request.match_info["projectId"], request.match_info["id"])
    new = parse(NewToken, await json_body(request))
    token, expires = await viewers.token(job, new.purpose)
    result = ViewerToken(
        token=token,
        expires_at=utc_at(expires),
        url=viewers.url(job, new.purpose, token),
    )
    return envelope(result, status=201)
