"""The RTMP ingest server: accepts publishers, asks `admit` at `publish`, forwards media.

It speaks the ingest types of `ingest.session`: a `PublishRequest` (protocol RTMP,
container FLV, the app from `connect`, the key from `publish`) to `admit`; a
`PublishRefused` becomes onStatus error (`status_code()`); the admitted
`PublishSession` gets `on_metadata` (onMetaData), `on_media` (each audio and video
message, FLV-tag-shaped) and `on_close`.

One asyncio task per connection. Everything a peer can get wrong (handshake,
chunk stream, AMF, limits, timeouts) ends only that connection, with one log line
`[rtmp ip:port] closed: <reason>`. Per-connection memory is bounded: one read
buffer, partial messages up to `max_message_bytes` in total, and output that is
drained (a peer that does not read is closed by the idle timeout).

What a stranger can hold is bounded too. Connections that have not published yet
("pending") are limited in total (`max_pending`) and per remote IP
(`max_pending_per_ip`; not for loopback peers, which a local proxy or encoder makes
share one address): one over a limit is aborted at accept, before any byte is read
and before its connection task exists (`ingest.connlimit`). A pending connection
has `handshake_timeout_seconds` for C0/C1/C2 and `publish_timeout_seconds` (from
accept) to publish. Publishing connections do not count as pending: their number is
bounded by the live jobs. Lines about connections that never published (refusals,
bad handshakes, timeouts, connections over a limit) are rate-limited per reason
(`ingest.ratelog`).

Behind a load balancer that sends the PROXY protocol (`proxy_protocol=True`), each
connection's header is read first (`ingest.proxied`, within
`proxy_header_timeout_seconds`; without a valid one the connection is closed, never
read as RTMP), and the client it names is the connection's remote from then on: the
per-IP pending limit is taken for it, after the header, and log lines and the
`PublishRequest` name it. Connections awaiting their header are bounded apart
(`max_pending` of them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from ingest.connlimit import ConnectionLimiter, GatedProtocol, Slot, is_loopback
from ingest.formats import amf0
from ingest.proxied import DEFAULT_TIMEOUT_SECONDS, ProxyFront
from ingest.ratelog import RateLimitedLog
from ingest.rtmp import handshake, messages
from ingest.rtmp.chunk import DEFAULT_WINDOW_ACK_SIZE, ChunkReader, ChunkWriter
from ingest.rtmp.errors import AmfMessageError, HandshakeError, ProtocolError, RtmpError
from ingest.rtmp.messages import Command, Message
from ingest.session import (
    FLV,
    AdmitCallback,
    IngestProtocol,
    PublishRefused,
    PublishRequest,
    PublishSession,
    masked_key,
)

logger = logging.getLogger(__name__)

SERVER_CHUNK_SIZE = 4096  # our output chunk size, announced after connect
PEER_BANDWIDTH = DEFAULT_WINDOW_ACK_SIZE
MAX_BYTES_BEFORE_PUBLISH = 1 << 20  # commands before publish take a few kB; more is hostile
READ_SIZE = 65536
_CLOSE_GRACE_SECONDS = 1.0
DEFAULT_MAX_PENDING = 64
DEFAULT_MAX_PENDING_PER_IP = 8
LISTEN_BACKLOG = 128
# Lines about connections that never published: this many per reason per interval.
LOG_LINES_PER_INTERVAL = 10
LOG_INTERVAL_SECONDS = 10.0


def status_code(refused: PublishRefused) -> str:
    """The onStatus code a refusal is told with: Failed for our own trouble (5xx),
    BadName for anything about the request (what OBS and ffmpeg show as refused)."""
    if refused.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return "NetStream.Publish.Failed"
    return "NetStream.Publish.BadName"


class _SessionFailed(Exception):
    """A PublishSession callback raised: a bug on the receiving side, not the peer's."""


class RtmpServer:
    """RTMP publish-only server. `start()` binds; `stop()` closes everything and waits."""

    def __init__(
        self,
        admit: AdmitCallback,
        *,
        host: str = "0.0.0.0",
        port: int = 1935,
        publish_timeout_seconds: float = 10.0,
        idle_timeout_seconds: float = 10.0,
        handshake_timeout_seconds: float = 5.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        room_timeout_seconds: float = 30.0,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_per_ip: int = DEFAULT_MAX_PENDING_PER_IP,
        per_ip_exempt_loopback: bool = True,
        proxy_protocol: bool = False,
        proxy_header_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        log_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admit = admit
        self.host = host
        self.requested_port = port
        self.publish_timeout_seconds = publish_timeout_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self.handshake_timeout_seconds = handshake_timeout_seconds
        self.max_message_bytes = max_message_bytes
        # How long a publisher faster than its pipeline may be held unread (the
        # session's `wait_for_room`) before the pipeline counts as stuck.
        self.room_timeout_seconds = room_timeout_seconds
        # Connections that have not published yet; the limiter counts them. Loopback
        # peers (a local RTMPS terminator, local encoders) share one address: for them
        # only the total applies.
        self.pending = ConnectionLimiter(
            max_pending,
            max_pending_per_ip,
            per_address_exempt=is_loopback if per_ip_exempt_loopback else None,
        )
        self._log = RateLimitedLog(
            logger,
            lines_per_interval=LOG_LINES_PER_INTERVAL,
            interval_seconds=LOG_INTERVAL_SECONDS,
            clock=log_clock,
            prefix="[rtmp] ",
        )
        self._log_flush: asyncio.TimerHandle | None = None
        # Behind a PROXY-protocol balancer: its header first, then the gate.
        self._front = (
            ProxyFront(
                self._gate,
                self._on_bad_proxy_header,
                timeout_seconds=proxy_header_timeout_seconds,
                max_waiting=max_pending,
            )
            if proxy_protocol
            else None
        )
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind and listen; idempotent."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._front or self._gate, self.host, self.requested_port, backlog=LISTEN_BACKLOG
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        logger.info("rtmp server listening on %s:%d", self.host, self.port)

    def _gate(self) -> asyncio.Protocol:
        """The listener's protocol factory: the pending limits, then a stream protocol."""
        return GatedProtocol(
            self.pending, self._stream_protocol, self._on_refused, lambda: self._stopping
        )

    def _stream_protocol(self, slot: Slot) -> asyncio.Protocol:
        reader = asyncio.StreamReader(limit=READ_SIZE)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._on_client(reader, writer, slot)

        return asyncio.StreamReaderProtocol(reader, on_client)

    def _on_refused(self, transport: asyncio.BaseTransport, address: str) -> None:
        peer = _format_peer(transport.get_extra_info("peername"))
        reason = self.pending.refusal_reason(address, "connections waiting to publish")
        self.log_limited("over the limit", logging.WARNING, "[rtmp %s] refused: %s", peer, reason)

    def _on_bad_proxy_header(self, peer: str, reason: str) -> None:
        self.log_limited("proxy protocol", logging.INFO, "[rtmp %s] closed: %s", peer, reason)

    @property
    def refused_over_limit(self) -> int:
        """Connections aborted at accept because a pending limit was reached."""
        return self.pending.refused

    @property
    def pending_count(self) -> int:
        """Connections accepted that have not published (yet)."""
        return self.pending.total

    def log_limited(
        self,
        reason: str,
        level: int,
        msg: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log a line about a connection that did not publish, rate-limited per `reason`."""
        self._log.log(reason, level, msg, *args, exc_info=exc_info)
        if self._log.suppressing and self._log_flush is None and not self._stopping:
            loop = asyncio.get_running_loop()
            self._log_flush = loop.call_later(self._log.interval_seconds, self._flush_log)

    def _flush_log(self) -> None:
        self._log_flush = None
        self._log.flush()
        if self._log.suppressing and not self._stopping:
            loop = asyncio.get_running_loop()
            self._log_flush = loop.call_later(self._log.interval_seconds, self._flush_log)

    @property
    def port(self) -> int:
        """The bound port (the chosen one when constructed with port=0)."""
        if self._port is None:
            raise RuntimeError("rtmp server not started")
        return self._port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def stop(self) -> None:
        """Close the listener and every connection (on_close for each publishing one); wait."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            if self._server is not None:
                self._server.close()
            if self._front is not None:
                self._front.close()
            connections = list(self._connections)
            for connection in connections:
                connection.close("server stopping")
            tasks = [c.task for c in connections if c.task is not None]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()
        finally:
            if self._log_flush is not None:
                self._log_flush.cancel()
                self._log_flush = None
            self._log.flush(force=True)
            self._stopped.set()

    async def _on_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot
    ) -> None:
        if self._stopping:
            slot.release()
            writer.transport.abort()
            return
        connection = _Connection(self, reader, writer, slot)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            slot.release()
            self._connections.discard(connection)


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


class _Connection:
    """One peer: handshake, then commands, then (once admitted) media to its session."""

    def __init__(
        self,
        server: RtmpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pending_slot: Slot,
    ) -> None:
        self.server = server
        self._pending_slot = pending_slot  # released once publishing
        self.remote = _format_peer(writer.get_extra_info("peername"))
        self.prefix = f"[rtmp {self.remote}]"
        self.task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._writer = writer
        self._chunks = ChunkReader(max_message_bytes=server.max_message_bytes)
        self._out = ChunkWriter()
        self._close_reason: str | None = None
        self._cleaning_up = False
        self._connected = False
        self._app = ""
        self._tc_url: str | None = None
        self._next_stream_id = 1
        self._stream_id = 0  # the stream being published
        self._handshaken = False
        self._publish_attempted = False
        self._refused = False
        self._published = False
        self._session: PublishSession | None = None
        self._session_open = False
        self._admitting = False
        self._waiting_room = False  # held unread while the pipeline catches up
        self._bytes_before_publish = 0
        self._started_at = self._loop.time()
        self._last_activity = self._started_at
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = False

    # Closing

    def close(self, reason: str) -> None:
        """Drop this connection (from the event loop); the session's on_close follows."""
        if self._close_reason is None:
            self._close_reason = reason
        if self._cleaning_up or self.task is None or self.task.done():
            return
        if self.task is not asyncio.current_task():
            self.task.cancel()
        # From inside our own task the dispatch loop sees _close_reason and returns.

    def reject(self, description: str) -> None:
        """Refuse the stream being published (from the event loop): onStatus error, then
        the connection is dropped (closed gracefully, so the status reaches the peer)."""
        if self._close_reason is None and self._published:
            self._status(self._stream_id, "error", "NetStream.Publish.Rejected", description)
        self.close(f"publish rejected: {description}")

    def _end_publish(self, reason: str) -> None:
        if self._session is None or not self._session_open:
            return
        self._session_open = False
        try:
            self._session.on_close(reason)
        except Exception:
            logger.exception("%s session on_close failed", self.prefix)

    async def run(self) -> None:
        level = logging.INFO
        exc_info: BaseException | None = None
        kind = "closed"  # the rate-limit key of the line, for a connection that never published
        self._arm_watchdog()
        try:
            await self._handshake()
            await self._serve()
            reason = self._close_reason or "closed by peer"
        except asyncio.CancelledError:
            reason = self._close_reason or "cancelled"
        except HandshakeError as exc:
            reason, level, kind = f"handshake error: {exc}", logging.WARNING, "handshake"
        except RtmpError as exc:
            reason, level, kind = f"protocol error: {exc}", logging.WARNING, "protocol"
        except (ConnectionError, OSError) as exc:
            reason = self._close_reason or f"connection lost: {exc or type(exc).__name__}"
        except _SessionFailed as exc:
            reason, level, exc_info = f"session error: {exc}", logging.ERROR, exc.__cause__
            kind = "internal"
        except Exception as exc:
            reason, level, exc_info = f"internal error: {exc!r}", logging.ERROR, exc
            kind = "internal"
        self._cleaning_up = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._pending_slot.release()
        self._end_publish(reason)
        self._shut_transport(graceful=level == logging.INFO)
        if self._published:  # bounded by the jobs: every line is written
            logger.log(level, "%s closed: %s", self.prefix, reason, exc_info=exc_info)
            return
        if self._refused:
            kind = "refused"
        elif not self._handshaken and kind == "closed":
            kind = "handshake"  # a handshake deadline, or gone during the handshake
        elif self._timed_out:
            kind = "timeout"
        self.server.log_limited(
            kind, level, "%s closed: %s", self.prefix, reason, exc_info=exc_info
        )

    def _shut_transport(self, graceful: bool) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            return
        if graceful:  # flush what we wrote (e.g. a refusal), but not for ever
            transport.close()
            self._loop.call_later(_CLOSE_GRACE_SECONDS, transport.abort)
        else:
            transport.abort()

    # Timeouts

    def _arm_watchdog(self) -> None:
        deadline = self._last_activity + self.server.idle_timeout_seconds
        if not self._published:
            deadline = min(deadline, self._started_at + self.server.publish_timeout_seconds)
        if not self._handshaken:
            deadline = min(deadline, self._started_at + self.server.handshake_timeout_seconds)
        self._watchdog = self._loop.call_at(deadline, self._on_watchdog)

    def _on_watchdog(self) -> None:
        now = self._loop.time()
        publish_timeout = self.server.publish_timeout_seconds
        handshake_timeout = self.server.handshake_timeout_seconds
        if not self._published and now >= self._started_at + publish_timeout:
            self._timed_out = True
            self.close(f"no publish within {publish_timeout:g} s")
            return
        if not self._handshaken and now >= self._started_at + handshake_timeout:
            self._timed_out = True
            self.close(f"no handshake within {handshake_timeout:g} s")
            return
        if self._admitting or self._waiting_room:  # the wait is ours, not the peer's
            self._last_activity = now
        elif now >= self._last_activity + self.server.idle_timeout_seconds:
            self._timed_out = True
            self.close(f"idle for {self.server.idle_timeout_seconds:g} s")
            return
        self._arm_watchdog()

    # Wire

    async def _handshake(self) -> None:
        phase = "C0"
        try:
            c0 = await self._reader.readexactly(1)
            handshake.check_c0(c0)  # at once: garbage is refused without waiting for more
            phase = "C1"
            c1 = await self._reader.readexactly(handshake.HANDSHAKE_SIZE)
            self._writer.write(handshake.server_response(c1))
            phase = "C2"
            c2 = await self._reader.readexactly(handshake.HANDSHAKE_SIZE)
        except asyncio.IncompleteReadError as exc:
            got, wanted = len(exc.partial), exc.expected
            raise HandshakeError(
                f"connection closed during handshake ({got} of {wanted} bytes of {phase})"
            ) from None
        handshake.check_c2(c2)
        self._handshaken = True
        self._last_activity = self._loop.time()

    def _send(self, csid: int, message: Message) -> None:
        if self._writer.transport.is_closing():
            raise ConnectionResetError("connection lost")
        self._writer.write(self._out.write(csid, message))

    async def _serve(self) -> None:
        limit = MAX_BYTES_BEFORE_PUBLISH
        while self._close_reason is None:
            data = await self._reader.read(READ_SIZE)
            if not data:
                return
            self._last_activity = self._loop.time()
            if not self._published:
                self._bytes_before_publish += len(data)
                if self._bytes_before_publish > limit:
                    raise ProtocolError(f"more than {limit} bytes before publish")
            self._chunks.feed(data)
            while self._close_reason is None:
                message = self._chunks.next_message()
                if message is None:
                    break
                await self._dispatch(message)
            # Acknowledge only once caught up with the socket (this read did not fill
            # the buffer): a publisher far ahead (a file pushed as fast as it goes)
            # has sent its last write and closes without reading what comes then,
            # and a close with unread data is a TCP reset, which throws away what the
            # kernel still holds of its stream. Caught up, nothing is in flight.
            if len(data) < READ_SIZE:
                sequence = self._chunks.take_acknowledgement()
                if sequence is not None:
                    ack = messages.acknowledgement(sequence)
                    self._send(messages.CONTROL_CHUNK_STREAM, ack)
            await self._writer.drain()
            if self._session_open:
                await self._wait_for_room()

    async def _wait_for_room(self) -> None:
        """Read nothing more while the pipeline is behind (a publisher faster than real
        time): TCP's flow control slows the publisher; nothing is lost."""
        assert self._session is not None
        room = self._session.wait_for_room()
        if room is None:
            return
        self._waiting_room = True
        try:
            await asyncio.wait_for(room, self.server.room_timeout_seconds)
        except TimeoutError:
            timeout = self.server.room_timeout_seconds
            raise _SessionFailed(f"the pipeline took no media for {timeout:g} s") from None
        finally:
            self._waiting_room = False
            self._last_activity = self._loop.time()

    async def _dispatch(self, message: Message) -> None:
        type_id = message.type_id
        if type_id == messages.AUDIO or type_id == messages.VIDEO:
            if self._session_open:
                assert self._session is not None
                try:
                    self._session.on_media(type_id, message.timestamp, message.payload)
                except Exception as exc:
                    raise _SessionFailed(f"on_media raised {exc!r}") from exc
        elif type_id in (messages.COMMAND_AMF0, messages.COMMAND_AMF3):
            await self._on_command(messages.parse_command(message))
        elif type_id in (messages.DATA_AMF0, messages.DATA_AMF3):
            if self._session_open:
                self._on_data(message)
        elif type_id == messages.USER_CONTROL:
            event, value = messages.parse_user_control(message.payload)
            if event == messages.PING_REQUEST and value is not None:
                ping = messages.user_control(messages.PING_RESPONSE, value)
                self._send(messages.CONTROL_CHUNK_STREAM, ping)
        # Set Chunk Size, Abort and Window Ack Size were applied by the chunk reader;
        # Acknowledgement, Set Peer Bandwidth and shared objects need nothing from us.

    def _on_data(self, message: Message) -> None:
        try:
            values = messages.parse_data(message)
        except AmfMessageError as exc:
            logger.debug("%s ignoring undecodable data message: %s", self.prefix, exc)
            return
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            assert self._session is not None
            try:
                self._session.on_metadata(dict(values[1]))
            except Exception as exc:
                raise _SessionFailed(f"on_metadata raised {exc!r}") from exc

    # Commands

    async def _on_command(self, command: Command) -> None:
        name = command.name
        if name == "connect":
            self._on_connect(command)
            return
        if not self._connected:
            raise ProtocolError(f"command {name!r} before connect")
        txn = command.transaction_id
        if name in ("releaseStream", "FCPublish"):
            if txn:
                self._reply(messages.result(txn, None, amf0.UNDEFINED))
        elif name == "createStream":
            stream_id = self._next_stream_id
            self._next_stream_id += 1
            self._reply(messages.result(txn, None, float(stream_id)))
        elif name == "publish":
            await self._on_publish(command)
        elif name == "FCUnpublish":
            if txn:
                self._reply(messages.result(txn, None, amf0.UNDEFINED))
            self._end_publish("unpublished")
        elif name in ("deleteStream", "closeStream"):
            # The publisher closes the socket next; closing first makes some (GStreamer's
            # rtmp2sink) report an error.
            self._end_publish("unpublished")
        elif name == "play":
            description = "this server only accepts publishers"
            stream_id = command.stream_id
            self._status(stream_id, "error", "NetStream.Play.Failed", description)
            self._close_reason = "play refused"
        elif txn and not name.startswith("_") and name not in ("onStatus", "getStreamLength"):
            code = "NetConnection.Call.Failed"
            self._reply(messages.error_result(txn, f"unknown command {name}", code))

    def _reply(self, message: Message) -> None:
        self._send(messages.COMMAND_CHUNK_STREAM, message)

    def _status(self, stream_id: int, level: str, code: str, description: str) -> None:
        message = messages.on_status(stream_id, level, code, description)
        self._send(messages.STATUS_CHUNK_STREAM, message)

    def _on_connect(self, command: Command) -> None:
        if self._connected:
            raise ProtocolError("second connect on one connection")
        properties = command.command_object
        if not isinstance(properties, dict) or not isinstance(properties.get("app"), str):
            raise ProtocolError("connect without an app")
        self._app = properties["app"].rstrip("/")
        tc_url = properties.get("tcUrl")
        self._tc_url = tc_url if isinstance(tc_url, str) else None
        self._connected = True
        control = messages.CONTROL_CHUNK_STREAM
        self._send(control, messages.window_ack_size(DEFAULT_WINDOW_ACK_SIZE))
        self._send(control, messages.set_peer_bandwidth(PEER_BANDWIDTH))
        self._writer.write(self._out.set_chunk_size(SERVER_CHUNK_SIZE))
        self._reply(messages.connect_result(command.transaction_id))

    async def _on_publish(self, command: Command) -> None:
        if self._publish_attempted:
            raise ProtocolError("second publish on one connection")
        self._publish_attempted = True
        stream_id = command.stream_id
        name = command.args[0] if command.args else None
        key, _, query = name.partition("?") if isinstance(name, str) else ("", "", "")
        if not key:
            await self._refuse(
                stream_id, PublishRefused("missing stream key", HTTPStatus.BAD_REQUEST)
            )
            return
        self._stream_id = stream_id
        request = PublishRequest(
            IngestProtocol.RTMP,
            self._app,
            key,
            self.remote,
            FLV,
            close=self.close,
            reject=self.reject,
            url=self._tc_url,
            query=query,
        )
        self._admitting = True
        try:
            session = await self.server.admit(request)
        except PublishRefused as refused:
            await self._refuse(stream_id, refused)
            return
        except Exception as exc:
            self.server.log_limited(
                "admission failed", logging.ERROR, "%s admission failed", self.prefix, exc_info=exc
            )
            await self._refuse(
                stream_id, PublishRefused("internal error", HTTPStatus.INTERNAL_SERVER_ERROR)
            )
            return
        finally:
            self._admitting = False
            self._last_activity = self._loop.time()
        self._session = session
        self._session_open = True
        self._published = True
        self._pending_slot.release()  # publishing: bounded by the jobs, not pending any more
        if self._close_reason is not None:  # closed while admission ran
            return
        self._send(messages.CONTROL_CHUNK_STREAM, messages.stream_begin(stream_id))
        self._status(stream_id, "status", "NetStream.Publish.Start", "Publishing started.")
        logger.info("%s publishing %s/%s", self.prefix, self._app, masked_key(key))

    async def _refuse(self, stream_id: int, refused: PublishRefused) -> None:
        self._refused = True
        self._status(stream_id, "error", status_code(refused), refused.description)
        self._close_reason = f"publish refused: {refused.description}"
        await self._writer.drain()
