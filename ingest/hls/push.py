"""HLS push ingest: publishers PUT (or POST) playlists and MPEG-TS segments to us.

A publisher (`ffmpeg -f hls -method PUT ... http://host:port/hls/KEY/index.m3u8`,
or a YouTube-style HLS encoder) uploads `/hls/{key}/{name}`: segments (`*.ts`) and
its media playlist (`*.m3u8`), each in a request of its own. What ffmpeg (5.1) does:
once a segment is cut it PUTs it whole (chunked), then the playlist listing it, each
on a connection of its own (`Connection: close`) that it closes right after the
body's last chunk, without reading our answer (so it never sees a status: a refused
publisher carries on to its end); with `-http_persistent 1`, one kept-alive
connection whose answers it reads (it retries a failed upload on a new connection),
but the last request (the playlist with `EXT-X-ENDLIST`) queued behind the previous
answer is dropped by aiohttp when ffmpeg hangs up, so that session ends by the gone
timer instead. With `-hls_flags delete_segments` it DELETEs old segments, on another
connection (answered 204, nothing done). Segments are answered 201, playlists 204.

The session is per key, not per connection: a key's first request (of any kind) is
admitted (`admit(PublishRequest(IngestProtocol.HLS, "hls", key, ...))`) before its
body is read; a refusal is its HTTP status with a short text and `Connection: close`,
the body unread. Then every request of that key goes to the same `PublishSession`
until it ends: the publisher stops uploading for `gone_after_target_durations` times
the playlist's `EXT-X-TARGETDURATION` ("publisher gone"), its playlist says
`EXT-X-ENDLIST`, onair calls the request's `close`/`reject`, or the server stops. A
later request of that key is admitted again, as a new session.

Order: a key's requests are served one at a time, in the order they arrived (an
`asyncio.Lock`, which is FIFO). A segment's body is streamed to `on_data` as it
comes, so its bytes are never interleaved with another segment's, and segments reach
the session in arrival order, which is the media order for a publisher that uploads
segment N before N+1 (ffmpeg does). The segments are just concatenated: MPEG-TS
carries its own timestamps, the decoder keeps one timeline. Between chunks the
server awaits `session.wait_for_room()` (bounded): while it waits nothing more is
read, so TCP slows a publisher faster than real time.

Bounds: a name is one path component (`[A-Za-z0-9_][A-Za-z0-9._-]*`, 128 characters
at most; anything else is 404), a segment `max_segment_bytes`, a playlist
`max_playlist_bytes` (413: a declared Content-Length over it is refused before
anything is read; a chunked body is cut at the limit, on a 188-byte TS packet
boundary, the rest unread), requests per second per key and per remote IP (429,
token buckets), publishers at once (503), requests queued per key, connections in
total and per IP (closed at accept, `ingest.connlimit`), a request's time
(`request_timeout_seconds`, 408; time waiting for the pipeline's room not counted).
Keys are secrets: every log line shows only their first 3 characters, and aiohttp's
access log is off (it would print the path).

Behind a load balancer that sends the PROXY protocol (`proxy_protocol=True`), each
connection's header is read before aiohttp sees a byte (`ingest.proxied`); the client
it names is the connection's peer for everything: the per-IP connection limit and
request rate, log lines, the `PublishRequest`'s remote. A connection without a valid
header in time is closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

import m3u8
from aiohttp import ClientPayloadError, StreamReader, web
from aiohttp.abc import AbstractStreamWriter

from ingest.connlimit import ConnectionLimiter, GatedProtocol, is_loopback
from ingest.proxied import DEFAULT_TIMEOUT_SECONDS, ProxyFront
from ingest.ratelog import RateLimitedLog
from ingest.session import (
    HLS_BACKUP_APP,
    HLS_PUSH_APP,
    MPEGTS,
    AdmitCallback,
    IngestProtocol,
    PublishRefused,
    PublishRequest,
    PublishSession,
    masked_key,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

APP = HLS_PUSH_APP  # the PublishRequest's app: the path's first component
APPS = (APP, HLS_BACKUP_APP)  # and a Standard job's backup publisher's
TS_PACKET_BYTES = 188
# The request's peer address, taken when it is made (the socket's `peername`, or the
# client a PROXY header named: `ingest.proxied.ProxiedTransport`).
_PEER: web.RequestKey[object] = web.RequestKey("onair.hls.peer", object)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_KEY = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,255}")
PLAYLIST_SUFFIX = ".m3u8"
SEGMENT_SUFFIXES = (".ts",)
MAX_QUEUED_PER_KEY = 8  # requests of one key waiting for the one being served
MIN_TARGET_SECONDS = 0.5  # EXT-X-TARGETDURATION is clamped to this range for the
MAX_TARGET_SECONDS = 30.0  # gone timer: a playlist cannot make a publisher immortal
LINGER_SECONDS = 1.0
LOG_LINES_PER_INTERVAL = 10
LOG_INTERVAL_SECONDS = 10.0
ENDLIST_REASON = "the publisher ended the stream (EXT-X-ENDLIST)"


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


def _text(status: int, text: str, *, close: bool = False) -> web.Response:
    response = web.Response(status=status, text=text + "\n")
    if close:
        # Connection: close, and aiohttp does not drain an unread body then.
        response.force_close()
    return response


class RequestRate:
    """Token buckets per name (a key, an IP): `rate_per_second`, bursts of `burst`.

    At most `max_names` buckets are kept (least recently used dropped first), so what
    strangers send bounds nothing but the time a forgotten bucket takes to refill."""

    def __init__(
        self,
        rate_per_second: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_names: int = 4096,
    ) -> None:
        self.rate_per_second = rate_per_second
        self.burst = max(burst, 1.0)
        self.clock = clock
        self.max_names = max_names
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, name: str) -> bool:
        """Take one token of `name`'s bucket; False when it has none."""
        now = self.clock()
        tokens, at = self._buckets.pop(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_second)
        allowed = tokens >= 1.0
        self._buckets[name] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_names:
            self._buckets.popitem(last=False)
        return allowed


class _Refusal(Exception):
    """A request answered without being served: its status and short text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Publisher:
    """One admitted key: its session, the lock its requests take turns on, its timer."""

    def __init__(self, server: HlsPushServer, key: str, app: str = APP) -> None:
        self.server = server
        self.key = key
        self.app = app
        self.slot = f"{app}/{key}"  # its place in the server's publishers
        self.prefix = f"[hls {app} {masked_key(key)}]"
        self.lock = asyncio.Lock()
        self.queued = 0  # requests waiting for the lock
        self.active = 0  # requests being served (holding the lock)
        self.session: PublishSession | None = None
        self.end_reason: str | None = None
        self.refusal: _Refusal | None = None  # what a request in flight is told at the end
        self.ended = asyncio.Event()
        self.target_seconds = server.default_target_seconds
        self._timer: asyncio.TimerHandle | None = None

    @property
    def gone_after_seconds(self) -> float:
        return self.server.gone_after_target_durations * self.target_seconds

    def arm(self) -> None:
        """(Re)start the gone timer: now is the publisher's last request."""
        if self._timer is not None:
            self._timer.cancel()
        if self.end_reason is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.gone_after_seconds, self._on_gone)

    def _on_gone(self) -> None:
        self._timer = None
        if self.active:  # a request still being served (or waiting for room) is activity
            self.arm()
            return
        self.end(f"publisher gone: no upload for {self.gone_after_seconds:g} s")

    def close(self, reason: str) -> None:
        """onair drops the publisher (from the event loop): the session ends."""
        self.end(reason, _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, f"stream closed: {reason}"))

    def reject(self, reason: str) -> None:
        """onair refuses what is published after all: the session ends, the request in
        flight (if any) is answered 403 with the reason."""
        self.end(f"publish rejected: {reason}", _Refusal(HTTPStatus.FORBIDDEN, reason))

    def end(self, reason: str, refusal: _Refusal | None = None) -> None:
        """End the session once: on_close(reason); the key's next request is admitted anew."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.refusal = refusal or _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, reason)
        self.ended.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server._forget(self)
        if self.session is None:
            return  # still being admitted: _admit closes the session it gets
        logger.info("%s closed: %s", self.prefix, reason)
        try:
            self.session.on_close(reason)
        except Exception:
            logger.exception("%s session on_close failed", self.prefix)

    async def wait(self, awaitable: Awaitable[T], timeout_seconds: float) -> T:
        """`awaitable`'s result; `_Refusal` if the session ends first, TimeoutError past
        `timeout_seconds`."""
        if self.refusal is not None:
            raise self.refusal
        task = asyncio.ensure_future(awaitable)
        owned = task is not awaitable  # a future given to us is its owner's to cancel
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            done, _ = await asyncio.wait(
                (task, ended), timeout=max(timeout_seconds, 0.0), return_when="FIRST_COMPLETED"
            )
        finally:
            ended.cancel()
        if task in done:
            return task.result()
        if owned:
            task.cancel()
        if self.refusal is not None:
            raise self.refusal
        raise TimeoutError


class HlsPushServer:
    """The HLS push ingest listener: its own aiohttp server. `start()` binds (port 0:
    any; `port` says which); `stop()` ends every session (on_close) and closes it."""

    def __init__(
        self,
        admit: AdmitCallback,
        *,
        host: str,
        port: int,
        max_segment_bytes: int = 32 * 1024 * 1024,
        max_playlist_bytes: int = 256 * 1024,
        max_requests_per_second: float = 20.0,
        max_publishers: int = 64,
        gone_after_target_durations: float = 3.0,
        default_target_seconds: float = 2.0,
        request_timeout_seconds: float = 30.0,
        room_timeout_seconds: float = 10.0,
        max_connections: int = 256,
        max_connections_per_ip: int = 16,
        per_ip_exempt_loopback: bool = True,
        proxy_protocol: bool = False,
        proxy_header_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admit = admit
        self.host = host
        self.requested_port = port
        self.max_segment_bytes = max_segment_bytes
        self.max_playlist_bytes = max_playlist_bytes
        self.max_publishers = max_publishers
        self.gone_after_target_durations = gone_after_target_durations
        self.default_target_seconds = default_target_seconds
        self.request_timeout_seconds = request_timeout_seconds
        # How long a publisher faster than its pipeline is held unread before the
        # pipeline counts as stuck (the session ends).
        self.room_timeout_seconds = room_timeout_seconds
        burst = max(max_requests_per_second, 1.0)
        self.key_rate = RequestRate(max_requests_per_second, burst, clock=clock)
        self.ip_rate = RequestRate(max_requests_per_second, burst, clock=clock)
        self._exempt = is_loopback if per_ip_exempt_loopback else None
        self.connections = ConnectionLimiter(
            max_connections, max_connections_per_ip, per_address_exempt=self._exempt
        )
        self._log = RateLimitedLog(
            logger,
            lines_per_interval=LOG_LINES_PER_INTERVAL,
            interval_seconds=LOG_INTERVAL_SECONDS,
            clock=clock,
            prefix="[hls] ",
        )
        self.proxy_protocol = proxy_protocol
        self.proxy_header_timeout_seconds = proxy_header_timeout_seconds
        self._front: ProxyFront | None = None
        self._publishers: dict[str, _Publisher] = {}
        self._runner: web.BaseRunner | None = None
        self._listener: asyncio.Server | None = None
        self._port: int | None = None
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (the chosen one when constructed with port=0)."""
        if self._port is None:
            raise RuntimeError("hls push server not started")
        return self._port

    @property
    def publisher_count(self) -> int:
        """Keys admitted and publishing now."""
        return sum(1 for p in self._publishers.values() if p.session is not None)

    async def start(self) -> None:
        """Bind and listen; idempotent."""
        if self._runner is not None:
            return
        # The low-level server, routing by hand on the raw path: a name percent-encodes
        # nothing (no "%2F", no "%2e%2e"), and our request class keeps a body the
        # publisher finished sending before it hung up (see `_Request`).
        # No access log: its lines would print the path, hence the key.
        # lingering_time: after answering a request whose body it did not read (a
        # refusal, 413), aiohttp discards what still comes for this long before
        # closing, whatever the Connection header says; closing at once, with unread
        # bytes, would be a TCP reset that can destroy the answer at the client.
        server = web.Server(
            self._on_request,
            request_factory=_make_request,
            access_log=None,
            lingering_time=LINGER_SECONDS,
        )
        runner = web.ServerRunner(server, shutdown_timeout=2.0)
        await runner.setup()

        def on_refused(transport: asyncio.BaseTransport, address: str) -> None:
            reason = self.connections.refusal_reason(address, "open connections")
            self._log.log(
                "over the limit", logging.WARNING, "[hls %s] refused: %s", address, reason
            )

        def gate() -> asyncio.Protocol:
            return GatedProtocol(
                self.connections, lambda _slot: server(), on_refused, lambda: self._stopping
            )

        def on_bad_proxy_header(peer: str, reason: str) -> None:
            self._log.log("proxy protocol", logging.INFO, "[hls %s] closed: %s", peer, reason)
            self._log.flush()

        if self.proxy_protocol:
            self._front = ProxyFront(
                gate,
                on_bad_proxy_header,
                timeout_seconds=self.proxy_header_timeout_seconds,
                max_waiting=self.connections.max_total,
            )
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                self._front or gate, self.host, self.requested_port
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(self._listener.sockets[0].getsockname()[1])
        logger.info("hls push ingest listening on %s:%d", self.host, self._port)

    async def stop(self) -> None:
        """End every session (on_close), stop listening, close the connections; wait."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            for publisher in list(self._publishers.values()):
                publisher.end("server stopping")
            if self._listener is not None:
                self._listener.close()
            if self._front is not None:
                self._front.close()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._listener is not None:
                await self._listener.wait_closed()
        finally:
            self._log.flush(force=True)
            self._stopped.set()

    def _forget(self, publisher: _Publisher) -> None:
        if self._publishers.get(publisher.slot) is publisher:
            del self._publishers[publisher.slot]

    def _refused(self, kind: str, prefix: str, text: str) -> None:
        self._log.log(kind, logging.INFO, "%s refused: %s", prefix, text)
        self._log.flush()

    # Requests

    async def _on_request(self, request: web.BaseRequest) -> web.StreamResponse:
        parts = request.raw_path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[0] or parts[1] not in APPS:
            return _text(HTTPStatus.NOT_FOUND, "not found", close=True)
        key, name = parts[2], parts[3]
        if not _KEY.fullmatch(key) or not _NAME.fullmatch(name):
            return _text(HTTPStatus.NOT_FOUND, "not found", close=True)
        if request.method in ("PUT", "POST"):
            return await self._on_upload(request, key, name, parts[1])
        if request.method == "DELETE":
            # ffmpeg's `-hls_flags delete_segments`: nothing of ours to delete.
            logger.debug("[hls %s] DELETE %s: 204", masked_key(key), name)
            return web.Response(status=HTTPStatus.NO_CONTENT)
        response = _text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", close=True)
        response.headers["Allow"] = "PUT, POST, DELETE"
        return response

    async def _on_upload(
        self, request: web.BaseRequest, key: str, name: str, app: str = APP
    ) -> web.StreamResponse:
        peer = request.get(_PEER)
        remote = _format_peer(peer)
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        playlist = name.endswith(PLAYLIST_SUFFIX)
        if not playlist and not name.endswith(SEGMENT_SUFFIXES):
            return _text(
                HTTPStatus.NOT_FOUND, "not a playlist (.m3u8) or segment (.ts)", close=True
            )
        prefix = f"[hls {remote} {masked_key(key)}]"
        exempt = self._exempt is not None and self._exempt(ip)
        if not (exempt or self.ip_rate.allow(ip)) or not self.key_rate.allow(key):
            self._refused("rate", prefix, "too many requests")
            return _text(HTTPStatus.TOO_MANY_REQUESTS, "too many requests", close=True)
        limit = self.max_playlist_bytes if playlist else self.max_segment_bytes
        length = request.content_length
        if length is not None and length > limit:
            self._refused("size", prefix, f"{name} of {length} bytes (limit {limit})")
            return _text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {limit} bytes", close=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_seconds
        try:
            publisher = await self._take(key, remote, request, deadline, app)
        except _Refusal as refusal:
            self._refused("refused", prefix, refusal.text)
            return _text(refusal.status, refusal.text, close=True)
        publisher.active += 1
        try:
            if request.headers.get("Expect", "").lower() == "100-continue":
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if playlist:
                response = await self._playlist(publisher, request, limit, deadline)
            else:
                response = await self._segment(publisher, request, limit, deadline)
        except _Refusal as refusal:
            response = _text(refusal.status, refusal.text, close=True)
        finally:
            publisher.active -= 1
            publisher.lock.release()
            publisher.arm()
        logger.debug("%s %s %s: %d", prefix, request.method, name, response.status)
        return response

    async def _take(
        self, key: str, remote: str, request: web.BaseRequest, deadline: float, app: str = APP
    ) -> _Publisher:
        """The key's publisher under `app`, admitted, with its lock held (the caller
        releases it)."""
        loop = asyncio.get_running_loop()
        slot = f"{app}/{key}"
        while True:
            if self._stopping:
                raise _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "server stopping")
            publisher = self._publishers.get(slot)
            if publisher is None:
                if len(self._publishers) >= self.max_publishers:
                    raise _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "too many publishers")
                publisher = _Publisher(self, key, app)
                self._publishers[slot] = publisher
            if publisher.queued >= MAX_QUEUED_PER_KEY:
                raise _Refusal(HTTPStatus.TOO_MANY_REQUESTS, "too many requests at once")
            publisher.queued += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await publisher.lock.acquire()
            except TimeoutError:
                raise _Refusal(HTTPStatus.REQUEST_TIMEOUT, "timed out waiting") from None
            finally:
                publisher.queued -= 1
            if publisher.end_reason is not None or self._publishers.get(slot) is not publisher:
                # ended (or refused) while we waited: ours is a new session to admit
                publisher.lock.release()
                continue
            if publisher.session is None:
                try:
                    await self._admit(publisher, remote, request)
                except BaseException:
                    publisher.lock.release()
                    raise
            if loop.time() > deadline:
                publisher.lock.release()
                raise _Refusal(HTTPStatus.REQUEST_TIMEOUT, "timed out waiting")
            return publisher

    async def _admit(self, publisher: _Publisher, remote: str, request: web.BaseRequest) -> None:
        publish = PublishRequest(
            IngestProtocol.HLS,
            publisher.app,
            publisher.key,
            remote,
            MPEGTS,
            close=publisher.close,
            reject=publisher.reject,
            url=f"{request.scheme}://{request.host}/{publisher.app}",
        )
        try:
            session = await self.admit(publish)
        except PublishRefused as refused:
            self._forget(publisher)
            raise _Refusal(refused.status, refused.description) from None
        except Exception as exc:
            self._forget(publisher)
            self._log.log(
                "admission failed",
                logging.ERROR,
                "%s admission failed",
                publisher.prefix,
                exc_info=exc,
            )
            raise _Refusal(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error") from None
        except BaseException:
            self._forget(publisher)
            raise
        publisher.session = session
        if publisher.end_reason is not None:  # closed while admission ran
            reason = publisher.end_reason
            try:
                session.on_close(reason)
            except Exception:
                logger.exception("%s session on_close failed", publisher.prefix)
            raise publisher.refusal or _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, reason)
        logger.info("%s publishing from %s", publisher.prefix, remote)
        publisher.arm()

    async def _playlist(
        self, publisher: _Publisher, request: web.BaseRequest, limit: int, deadline: float
    ) -> web.Response:
        loop = asyncio.get_running_loop()
        body = bytearray()
        try:
            while True:
                chunk = await publisher.wait(request.content.readany(), deadline - loop.time())
                if not chunk:
                    break
                if len(body) + len(chunk) > limit:
                    return _text(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {limit} bytes", close=True
                    )
                body += chunk
        except TimeoutError:
            return _text(HTTPStatus.REQUEST_TIMEOUT, "request too slow", close=True)
        except (ClientPayloadError, ConnectionError):
            return _text(HTTPStatus.BAD_REQUEST, "body cut short", close=True)
        try:
            parsed = m3u8.loads(body.decode("utf-8"))
        except Exception:  # the m3u8 package raises what it likes on garbage
            return _text(HTTPStatus.BAD_REQUEST, "not an m3u8 playlist", close=True)
        target = parsed.target_duration
        if isinstance(target, int | float) and target > 0:
            publisher.target_seconds = min(
                max(float(target), MIN_TARGET_SECONDS), MAX_TARGET_SECONDS
            )
        if parsed.is_endlist:
            publisher.end(ENDLIST_REASON)
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def _segment(
        self, publisher: _Publisher, request: web.BaseRequest, limit: int, deadline: float
    ) -> web.Response:
        """Stream the body to on_data, in whole TS packets, honouring wait_for_room."""
        loop = asyncio.get_running_loop()
        received = 0
        carry = b""  # the start of a TS packet the next chunk completes
        try:
            deadline += await self._room(publisher)
            while True:
                chunk = await publisher.wait(request.content.readany(), deadline - loop.time())
                if not chunk:
                    break
                over = received + len(chunk) > limit
                if over:
                    chunk = chunk[: limit - received]
                received += len(chunk)
                data = carry + chunk
                whole = len(data) - len(data) % TS_PACKET_BYTES
                carry = data[whole:]
                self._feed(publisher, data[:whole])
                if over:
                    logger.warning("%s segment over %d bytes: cut there", publisher.prefix, limit)
                    return _text(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {limit} bytes", close=True
                    )
                deadline += await self._room(publisher)
        except TimeoutError:
            logger.warning("%s segment not received within the request timeout", publisher.prefix)
            return _text(HTTPStatus.REQUEST_TIMEOUT, "request too slow", close=True)
        except (ClientPayloadError, ConnectionError) as exc:
            logger.info("%s segment cut short: %s", publisher.prefix, exc or type(exc).__name__)
            return _text(HTTPStatus.BAD_REQUEST, "body cut short", close=True)
        if carry:  # not a whole number of TS packets: the decoder copes
            self._feed(publisher, carry)
        return web.Response(status=HTTPStatus.CREATED)

    def _feed(self, publisher: _Publisher, data: bytes) -> None:
        if not data:
            return
        assert publisher.session is not None
        try:
            publisher.session.on_data(data)
        except Exception as exc:
            logger.exception("%s session on_data failed", publisher.prefix)
            publisher.end(f"session error: on_data raised {exc!r}")
            raise _Refusal(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error") from None

    async def _room(self, publisher: _Publisher) -> float:
        """Wait (bounded) while the pipeline is behind; the seconds waited."""
        assert publisher.session is not None
        room = publisher.session.wait_for_room()
        if room is None:
            return 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await publisher.wait(room, self.room_timeout_seconds)
        except TimeoutError:
            timeout = self.room_timeout_seconds
            publisher.end(f"the pipeline took no media for {timeout:g} s")
            raise _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "the pipeline is stuck") from None
        return loop.time() - started


class _Request(web.BaseRequest):
    """aiohttp's request, but a body that arrived whole stays readable after the peer
    hung up. ffmpeg's HLS muxer closes its (write-only) connection right after a
    segment's last chunk without reading the answer; aiohttp would then fail every
    read of that body, even though all of it is in its buffer. A body cut short
    still fails its reads (ConnectionResetError)."""

    def _cancel(self, exc: BaseException) -> None:
        if not self.content.is_eof():
            super()._cancel(exc)


def _make_request(
    message: Any,
    payload: StreamReader,
    protocol: Any,
    writer: AbstractStreamWriter,
    task: asyncio.Task[None],
) -> web.BaseRequest:
    request = _Request(message, payload, protocol, writer, task, asyncio.get_running_loop())
    # Now, while the connection is surely open: ffmpeg may be gone before we look.
    transport = protocol.transport
    request[_PEER] = transport.get_extra_info("peername") if transport is not None else None
    return request
