"""The SRT ingest server: one UDP port for every job, publishers only, MPEG-TS.

The flow of one publisher:

1. **Listen callback** (libsrt's receiving thread, for each new handshake). It reads
   the stream id (`#!::r=live/KEY,m=publish`, `#!::r=KEY`, or the bare key;
   `parse_stream_id`), checks the limits (at most `max_connections` pending and
   connected at once; at most `max_pending_per_ip` handshakes and admissions pending
   per IP), then asks `precheck(key)` on the event loop, bounded by
   `PRECHECK_TIMEOUT_SECONDS`. A refusal is a reject reason, 1000 + the HTTP status
   (`SRT_REJX_*`: 1404 unknown key, 1403 forbidden, 1503 unavailable; 1400 a malformed
   stream id, 1405 a playback mode, 1402 over the per-IP limit), so the publisher is
   refused before any media. An accepted key's `SrtAccess.passphrase` is set on the new
   socket: libsrt itself refuses a wrong passphrase, and (encryption enforced, its
   default) a passphrase sent to a job without one.
2. **Accept** (a thread of ours, polling the listener). The stream id is read back
   (`SRTO_STREAMID`) and a connection thread is started for the socket: the only
   thread that ever reads or closes it.
3. **Admission** (the event loop). `admit(PublishRequest(SRT, "live", key, "ip:port",
   MPEGTS, ...))`; a `PublishRefused` there (capacity, already publishing) closes the
   socket (SRT has no way left to say why: the reason is logged).
4. **Reading** (the connection thread). `srt_recvmsg` with a receive timeout (so a
   close or `stop()` is noticed), the bytes realigned on TS packets (`TsAligner`) and
   handed to `session.on_data` on the loop. At most `MAX_INFLIGHT_MESSAGES` are handed
   over and not delivered yet, and while `session.wait_for_room()` is pending nothing
   more is read (SRT's flow window then slows the publisher), for at most
   `ROOM_TIMEOUT_SECONDS`. At the end, `on_close(reason)` once.

Threads: libsrt's own, one accept thread, one per connection (at most
`max_connections`). libsrt calls that may wait on libsrt's threads (close, cleanup)
are never made on the event loop: the listen callback may be waiting for the loop.
Stream keys are secrets: logs show `masked_key(key)`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ingest.connlimit import ConnectionLimiter, Slot
from ingest.ratelog import RateLimitedLog
from ingest.session import (
    BACKUP_APP,
    INGEST_APP,
    MPEGTS,
    AdmitCallback,
    IngestProtocol,
    PublishRefused,
    PublishRequest,
    PublishSession,
    TransportStatistics,
    masked_key,
)
from ingest.srt import libsrt
from ingest.srt.libsrt import SrtError

logger = logging.getLogger(__name__)

APP = INGEST_APP  # the application SRT publishers publish under
APPS = (APP, BACKUP_APP)  # and a Standard job's backup publisher
PRECHECK_TIMEOUT_SECONDS = 1.0  # the listen callback holds libsrt's receiving thread
RECEIVE_TIMEOUT_MS = 100  # how soon a reader notices a close
ACCEPT_POLL_MS = 100
PENDING_TIMEOUT_SECONDS = 5.0  # a handshake let through but never completed gives its slot back
ROOM_TIMEOUT_SECONDS = 30.0
MAX_INFLIGHT_MESSAGES = 256  # handed to the loop, not delivered yet (~370 kB)
LISTEN_BACKLOG = 16
JOIN_TIMEOUT_SECONDS = 1.5
MAX_STREAM_ID_CHARS = 512  # libsrt's own limit
LOG_LINES_PER_INTERVAL = 10
LOG_INTERVAL_SECONDS = 10.0
# libsrt writes its own lines to stderr, one per refused handshake at warning level:
# what strangers trigger is logged here, rate-limited, instead.
LIBSRT_LOG_LEVEL = libsrt.LOG_ERR

TS_PACKET_BYTES = 188
TS_SYNC_BYTE = 0x47
SYNC_LOOKAHEAD_PACKETS = 3

_DISCONNECTED = frozenset(
    {libsrt.SRT_ECONNLOST, libsrt.SRT_ENOCONN, libsrt.SRT_EINVSOCK, libsrt.SRT_ESCLOSED}
)


@dataclass(frozen=True)
class SrtAccess:
    """What the precheck says of a key it accepts."""

    passphrase: str | None  # the job's passphrase (10-79 chars), None for none


Precheck = Callable[[str], Awaitable[SrtAccess]]  # key -> access; raises PublishRefused


def reject_reason(status: int) -> int:
    """The SRT reject reason of a refusal's HTTP status (SRT_REJX_*: 1000 + status)."""
    return libsrt.SRT_REJC_PREDEFINED + int(status)


# Stream ids


class StreamIdError(ValueError):
    """A stream id this server does not take; `reject_reason` says so on the wire."""

    def __init__(self, description: str, reason: int = libsrt.SRT_REJX_BAD_REQUEST) -> None:
        super().__init__(description)
        self.description = description
        self.reject_reason = reason


def parse_stream_id(stream_id: str) -> str:
    """The stream key of a publisher's stream id (see `parse_resource`)."""
    return parse_resource(stream_id)[1]


def parse_resource(stream_id: str) -> tuple[str, str]:
    """The application and stream key of a publisher's stream id.

    Takes the access-control syntax `#!::r=live/KEY,m=publish` (`r=KEY` too; `m`
    defaults to publish; other keys such as `u=` are ignored) or the bare key (or
    `live/KEY`); `backup/KEY` is a Standard job's backup publisher. A playback mode
    (`m=request`, `m=bidirectional`) is refused: this server only takes publishers."""
    if len(stream_id) > MAX_STREAM_ID_CHARS:
        raise StreamIdError("stream id too long")
    if stream_id.startswith("#!::"):
        fields: dict[str, str] = {}
        for item in stream_id[4:].split(","):
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise StreamIdError("malformed stream id")
            fields[name.strip()] = value
        mode = fields.get("m", "publish")
        if mode in ("request", "bidirectional"):
            raise StreamIdError(f"mode {mode} not served: publish only", libsrt.SRT_REJX_BAD_MODE)
        if mode != "publish":
            raise StreamIdError("unknown mode")
        resource = fields.get("r", "")
    else:
        resource = stream_id
    app, sep, key = resource.rpartition("/")
    if sep and app not in APPS:
        raise StreamIdError("unknown application", libsrt.SRT_REJX_NOTFOUND)
    if not key or not key.isprintable() or any(c.isspace() for c in key):
        raise StreamIdError("missing or malformed stream key")
    return (app if sep else APP), key


# MPEG-TS alignment


class TsAligner:
    """Cuts a byte stream into whole MPEG-TS packets that start on their sync byte.

    What a receiver gets may start mid-packet (the first datagrams lost, a publisher
    whose datagrams are not multiples of 188 bytes) or lose a piece mid-stream (a
    datagram given up as too late). Unaligned, bytes are dropped until a 0x47 is
    followed by `lookahead_packets` more 188 bytes apart; aligned, a packet is passed on
    only if it starts with 0x47 and so does the next one (when its first byte is there
    already): a packet spliced from two pieces around a loss is dropped, and the search
    starts again. At most a few packets' worth of bytes are held."""

    def __init__(self, lookahead_packets: int = SYNC_LOOKAHEAD_PACKETS) -> None:
        self.lookahead_packets = lookahead_packets
        self.bytes_dropped = 0
        self.resyncs = 0  # times alignment was lost after having been found
        self._buffer = b""
        self._aligned = False

    @property
    def aligned(self) -> bool:
        return self._aligned

    def feed(self, data: bytes) -> bytes:
        """The whole, aligned packets `data` completes (maybe b"")."""
        buf = self._buffer + data if self._buffer else bytes(data)
        end = len(buf)
        out: list[bytes] = []
        pos = 0
        while pos < end:
            if not self._aligned:
                found = self._find_sync(buf, pos)
                if found is None:  # nothing here can start a packet
                    self.bytes_dropped += end - pos
                    pos = end
                    break
                start, confirmed = found
                self.bytes_dropped += start - pos
                pos = start
                if not confirmed:  # wait for more bytes to confirm it
                    break
                self._aligned = True
            if end - pos < TS_PACKET_BYTES:
                break
            after = pos + TS_PACKET_BYTES
            if buf[pos] != TS_SYNC_BYTE or (after < end and buf[after] != TS_SYNC_BYTE):
                self._aligned = False
                self.resyncs += 1
                self.bytes_dropped += 1
                pos += 1
                continue
            # Fast path: the packets that follow, as long as each starts with 0x47.
            last = pos + ((end - pos) // TS_PACKET_BYTES) * TS_PACKET_BYTES
            stop = after
            while stop < last and buf[stop] == TS_SYNC_BYTE:
                nxt = stop + TS_PACKET_BYTES
                if nxt < end and buf[nxt] != TS_SYNC_BYTE:
                    break  # the packet at `stop` is suspect: the slow path decides
                stop = nxt
            out.append(buf[pos:stop])
            pos = stop
        self._buffer = buf[pos:]
        return b"".join(out)

    def _find_sync(self, buf: bytes, pos: int) -> tuple[int, bool] | None:
        """The first offset from `pos` that can start a packet, and whether all the
        lookahead packets confirm it (False: too few bytes to tell yet)."""
        end = len(buf)
        while True:
            start = buf.find(TS_SYNC_BYTE, pos)
            if start < 0:
                return None
            for k in range(1, self.lookahead_packets + 1):
                offset = start + k * TS_PACKET_BYTES
                if offset >= end:
                    return start, False
                if buf[offset] != TS_SYNC_BYTE:
                    break
            else:
                return start, True
            pos = start + 1


# The server


@dataclass
class _Pending:
    """A handshake let through the listen callback, not accepted yet."""

    slot: Slot
    since: float


class SrtServer:
    """SRT publish-only server on one UDP port. `start()` binds; `stop()` closes every
    connection (their sessions get `on_close`) and the listener, and waits for every
    thread of ours."""

    def __init__(
        self,
        admit: AdmitCallback,
        precheck: Precheck,
        *,
        host: str,
        port: int,
        latency_ms: int = 120,
        max_connections: int = 64,
        max_pending_per_ip: int = 8,
    ) -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        self.admit = admit
        self.precheck = precheck
        self.host = host
        self.requested_port = port
        self.latency_ms = latency_ms
        self.max_connections = max_connections
        self.max_pending_per_ip = max_pending_per_ip
        self.room_timeout_seconds = ROOM_TIMEOUT_SECONDS
        # Touched by libsrt's thread (the callback), ours and the loop: under _lock.
        self._lock = threading.Lock()
        self._pending_slots = ConnectionLimiter(max_connections, max_pending_per_ip)
        self._pending: dict[int, _Pending] = {}
        self._connections: set[_Connection] = set()
        self.refused = 0  # handshakes refused in the listen callback
        self._log = RateLimitedLog(
            logger,
            lines_per_interval=LOG_LINES_PER_INTERVAL,
            interval_seconds=LOG_INTERVAL_SECONDS,
            prefix="[srt] ",
        )
        self._log_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener = libsrt.INVALID_SOCK
        self._callback: Any = None  # the CFUNCTYPE object: libsrt holds only its address
        self._accept_thread: threading.Thread | None = None
        self._stop_flag = threading.Event()
        self._port: int | None = None
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()

    # Life

    async def start(self) -> None:
        """Bind the UDP port and listen; idempotent."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(libsrt.startup)
        libsrt.set_log_level(LIBSRT_LOG_LEVEL)
        try:
            self._listener = self._listen()
        except BaseException:
            await asyncio.to_thread(libsrt.cleanup)
            raise
        self._started = True
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"srt-accept-{self._port}", daemon=True
        )
        self._accept_thread.start()
        logger.info(
            "srt server listening on %s:%d (libsrt %s)", self.host, self.port, libsrt.version()
        )

    def _listen(self) -> int:
        sock = libsrt.create_socket()
        try:
            libsrt.set_int(sock, libsrt.SRTO_TRANSTYPE, libsrt.SRTT_LIVE)
            libsrt.set_int(sock, libsrt.SRTO_LATENCY, self.latency_ms)  # inherited
            libsrt.set_bool(sock, libsrt.SRTO_RCVSYN, False)  # accept polls
            libsrt.bind(sock, self.host, self.requested_port)
            self._port = libsrt.local_port(sock)
            self._callback = libsrt.ListenCallback(self._on_listen)
            libsrt.set_listen_callback(sock, self._callback)
            libsrt.listen(sock, LISTEN_BACKLOG)
        except BaseException:
            libsrt.close(sock)
            raise
        return sock

    @property
    def port(self) -> int:
        """The bound port (the chosen one when constructed with port=0)."""
        if self._port is None:
            raise RuntimeError("srt server not started")
        return self._port

    @property
    def connection_count(self) -> int:
        """Connections accepted and not closed yet (admitting or publishing)."""
        with self._lock:
            return len(self._connections)

    @property
    def pending_count(self) -> int:
        """Handshakes and admissions under way."""
        with self._lock:
            return self._pending_slots.total

    async def stop(self) -> None:
        """Close every connection and the listener; wait for our threads (idempotent)."""
        if not self._started:
            return
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._stop_flag.set()
        try:
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                connection.close("dropped: server stopping")
            await asyncio.to_thread(self._join_threads)
            await asyncio.sleep(0)  # the threads' last callbacks (on_close) run now
            await asyncio.to_thread(libsrt.cleanup)
        finally:
            with self._log_lock:
                self._log.flush(force=True)
            self._stopped.set()
            logger.info("srt server on port %s stopped", self._port)

    def _join_threads(self) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
        if self._accept_thread is not None:
            self._accept_thread.join(max(deadline - time.monotonic(), 0.0))
        with self._lock:  # any accepted while stopping began
            connections = list(self._connections)
        for connection in connections:
            connection.close("dropped: server stopping")
        for connection in connections:
            connection.thread.join(max(deadline - time.monotonic(), 0.0))
        left = [c.prefix for c in connections if c.thread.is_alive()]
        if left:
            logger.warning("srt connection threads still running after stop: %s", left)

    # The listen callback (libsrt's thread)

    def _on_listen(
        self, _opaque: int | None, sock: int, _version: int, peer: int | None, sid: bytes | None
    ) -> int:
        """0 lets the handshake go on; -1 refuses it with the reason set on `sock`.
        Never raises (ctypes would print and return 0: accept)."""
        try:
            reason = self._screen(sock, libsrt.parse_sockaddr(peer), sid or b"")
        except BaseException:
            logger.exception("[srt] listen callback failed")
            reason = libsrt.SRT_REJX_ISE
        if reason is None:
            return 0
        with self._lock:
            self.refused += 1
        libsrt.set_reject_reason(sock, reason)
        return -1

    def _screen(self, sock: int, peer: tuple[str, int], raw_id: bytes) -> int | None:
        """None to accept the handshake, else its reject reason."""
        ip, port = peer
        prefix = f"[srt {_format_remote(ip, port)}]"
        if self._stop_flag.is_set() or self._loop is None:
            return libsrt.SRT_REJX_DOWN
        try:
            key = parse_stream_id(raw_id.decode("utf-8", "strict"))
        except UnicodeDecodeError:
            self._log_limited(
                "bad stream id", logging.INFO, "%s refused: stream id not UTF-8", prefix
            )
            return libsrt.SRT_REJX_BAD_REQUEST
        except StreamIdError as exc:
            self._log_limited("bad stream id", logging.INFO, "%s refused: %s", prefix, exc)
            return exc.reject_reason
        with self._lock:
            if self._connection_total() >= self.max_connections:
                over_total = True
                slot = None
            else:
                over_total = False
                slot = self._pending_slots.acquire(ip)
            if slot is None:
                why = self._pending_slots.refusal_reason(ip, "handshakes pending")
            else:
                self._pending[sock] = _Pending(slot, time.monotonic())
        if slot is None:
            if over_total:
                why = f"{self.max_connections} connections (limit {self.max_connections})"
            self._log_limited("over the limit", logging.WARNING, "%s refused: %s", prefix, why)
            return libsrt.SRT_REJX_DOWN if over_total else libsrt.SRT_REJX_OVERLOAD
        reason = self._ask_precheck(sock, key, prefix)
        if reason is not None:
            self._release(self._forget_pending(sock))
        return reason

    def _ask_precheck(self, sock: int, key: str, prefix: str) -> int | None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(_call(self.precheck, key), self._loop)
        try:
            access = future.result(timeout=PRECHECK_TIMEOUT_SECONDS)
        except PublishRefused as refused:
            self._log_limited(
                "refused",
                logging.INFO,
                "%s refused %s/%s: %s",
                prefix,
                APP,
                masked_key(key),
                refused.description,
            )
            return reject_reason(refused.status)
        except TimeoutError:
            future.cancel()
            self._log_limited(
                "precheck slow",
                logging.WARNING,
                "%s refused: no precheck answer within %g s",
                prefix,
                PRECHECK_TIMEOUT_SECONDS,
            )
            return reject_reason(HTTPStatus.SERVICE_UNAVAILABLE)
        except Exception as exc:
            self._log_limited(
                "precheck failed", logging.ERROR, "%s precheck failed", prefix, exc_info=exc
            )
            return libsrt.SRT_REJX_ISE
        if access.passphrase:
            try:
                libsrt.set_string(sock, libsrt.SRTO_PASSPHRASE, access.passphrase)
            except SrtError as exc:  # not 10-79 characters: the job's setting is wrong
                self._log_limited(
                    "passphrase", logging.ERROR, "%s cannot set the passphrase: %s", prefix, exc
                )
                return libsrt.SRT_REJX_ISE
        return None

    def _connection_total(self) -> int:
        """Handshakes let through plus connections accepted (under `_lock`)."""
        return len(self._connections) + len(self._pending)

    def _forget_pending(self, sock: int) -> Slot | None:
        with self._lock:
            pending = self._pending.pop(sock, None)
        if pending is None:
            return None
        return pending.slot

    def _release(self, slot: Slot | None) -> None:
        if slot is not None:
            with self._lock:
                slot.release()

    # Accepting (our thread)

    def _accept_loop(self) -> None:
        epoll: libsrt.Epoll | None = None
        try:
            epoll = libsrt.Epoll()
            epoll.add(self._listener)
            while not self._stop_flag.is_set():
                ready = epoll.wait(ACCEPT_POLL_MS)
                self._sweep_pending()
                if ready:
                    self._accept_one()
                with self._log_lock:
                    if self._log.suppressing:
                        self._log.flush()
        except Exception:
            logger.exception("[srt] accept loop failed")
        finally:
            if epoll is not None:
                epoll.release()
            libsrt.close(self._listener)
            with self._lock:
                pending, self._pending = list(self._pending.values()), {}
                for entry in pending:
                    entry.slot.release()

    def _accept_one(self) -> None:
        # One per readiness: the poll reports the listener again while more are queued
        # (a second accept would find none and libsrt would log an error).
        try:
            sock, (ip, port) = libsrt.accept(self._listener)
        except SrtError as exc:
            if exc.code != libsrt.SRT_EASYNCRCV:
                logger.warning("[srt] accept failed: %s", exc)
            return
        self._accepted(sock, ip, port)

    def _accepted(self, sock: int, ip: str, port: int) -> None:
        remote = _format_remote(ip, port)
        slot = self._forget_pending(sock)
        try:
            app, key = parse_resource(libsrt.get_string(sock, libsrt.SRTO_STREAMID))
            libsrt.set_bool(sock, libsrt.SRTO_RCVSYN, True)
            libsrt.set_int(sock, libsrt.SRTO_RCVTIMEO, RECEIVE_TIMEOUT_MS)
        except (SrtError, StreamIdError) as exc:
            logger.warning("[srt %s] closed at accept: %s", remote, exc)
            self._release(slot)
            libsrt.close(sock)
            return
        with self._lock:
            if slot is None:  # the callback's entry was swept: count it again
                if self._connection_total() < self.max_connections:
                    slot = self._pending_slots.acquire(ip)
            if slot is not None:
                connection = _Connection(self, sock, remote, key, slot, app)
                self._connections.add(connection)
                connection.thread.start()  # under the lock: stop() joins only started ones
        if slot is None:
            logger.warning("[srt %s] closed at accept: over the connection limit", remote)
            libsrt.close(sock)

    def _sweep_pending(self) -> None:
        """Give back the slots of handshakes let through that will never be accepted
        (refused by libsrt after the callback: a wrong passphrase; or abandoned)."""
        now = time.monotonic()
        with self._lock:
            candidates = list(self._pending.items())
        gone = []
        for sock, entry in candidates:
            state = libsrt.socket_state(sock)
            too_old = now - entry.since > PENDING_TIMEOUT_SECONDS
            if state in (libsrt.SRTS_BROKEN, libsrt.SRTS_CLOSED, libsrt.SRTS_NONEXIST):
                gone.append(sock)
            elif too_old and state != libsrt.SRTS_CONNECTED:
                gone.append(sock)
        for sock in gone:
            self._release(self._forget_pending(sock))

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    # Logging

    def _log_limited(
        self,
        reason: str,
        level: int,
        msg: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        """A line about a connection that did not publish, rate-limited per `reason`."""
        with self._log_lock:
            self._log.log(reason, level, msg, *args, exc_info=exc_info)


async def _call(precheck: Precheck, key: str) -> SrtAccess:
    return await precheck(key)


def _format_remote(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class _Connection:
    """One accepted publisher: admission on the loop, then its thread reads the socket.

    The thread owns the socket: it alone reads it and closes it. `close()` (any
    thread) only asks, and the thread ends within a receive timeout."""

    def __init__(
        self, server: SrtServer, sock: int, remote: str, key: str, slot: Slot, app: str = APP
    ) -> None:
        assert server._loop is not None
        self.server = server
        self.sock = sock
        self.remote = remote
        self.key = key
        self.app = app
        self.prefix = f"[srt {remote}]"
        self._loop = server._loop
        self._slot: Slot | None = slot  # pending until admitted
        self._close_reason: str | None = None
        self._reason_lock = threading.Lock()
        self._closing = threading.Event()
        self._room = threading.Event()  # set: the session takes more
        self._room.set()
        self._inflight = threading.BoundedSemaphore(MAX_INFLIGHT_MESSAGES)
        self._session: PublishSession | None = None
        self._session_open = False  # loop only
        self._room_tasks: set[asyncio.Task[None]] = set()
        self._socket_open = True
        self.aligner = TsAligner()
        self.thread = threading.Thread(target=self._run, name=f"srt-reader-{remote}", daemon=True)

    # Any thread

    def close(self, reason: str) -> None:
        """Drop this connection; the session's on_close(reason) follows."""
        with self._reason_lock:
            if self._close_reason is None:
                self._close_reason = reason
        self._closing.set()
        self._room.set()

    def transport_stats(self) -> TransportStatistics | None:
        """libsrt's statistics of this connection now; None once it is closed."""
        if not self._socket_open:
            return None
        try:
            stats = libsrt.bstats(self.sock)
        except SrtError:
            return None
        return TransportStatistics(
            rtt_ms=float(stats.msRTT),
            packets_received=int(stats.pktRecvTotal),
            packets_lost=int(stats.pktRcvLossTotal),
            # The receiver's count of retransmitted packets it got: the "local" counter,
            # which covers the whole connection since nothing here clears it.
            packets_retransmitted=int(stats.pktRcvRetrans),
            packets_dropped=int(stats.pktRcvDropTotal),
            bandwidth_mbps=float(stats.mbpsBandwidth),
        )

    # The loop

    def _drop(self, reason: str) -> None:
        self.close(f"dropped: {reason}")

    def _reject(self, reason: str) -> None:
        # Once connected, SRT has no way to tell the publisher why: it is dropped.
        self.close(f"dropped: rejected: {reason}")

    async def _admit(self) -> PublishSession | None:
        request = PublishRequest(
            IngestProtocol.SRT,
            self.app,
            self.key,
            self.remote,
            MPEGTS,
            close=self._drop,
            reject=self._reject,
            transport_stats=self.transport_stats,
        )
        try:
            session = await self.server.admit(request)
        except PublishRefused as refused:
            self.close(f"publish refused: {refused.description}")
            return None
        except Exception:
            logger.exception("%s admission failed", self.prefix)
            self.close("admission failed")
            return None
        finally:
            slot, self._slot = self._slot, None
            self.server._release(slot)  # publishing: bounded by max_connections
        self._session = session
        self._session_open = True
        if self._closing.is_set():
            self._finish(self._close_reason or "dropped")
            return None
        logger.info("%s publishing %s/%s", self.prefix, self.app, masked_key(self.key))
        return session

    def _deliver(self, data: bytes) -> None:
        self._inflight.release()
        if not self._session_open:
            return
        assert self._session is not None
        try:
            self._session.on_data(data)
            room = self._session.wait_for_room()
        except Exception:
            logger.exception("%s session failed", self.prefix)
            self.close("dropped: session failed")
            return
        if room is not None and self._room.is_set() and not self._closing.is_set():
            self._room.clear()
            task = self._loop.create_task(self._wait_for_room(room))
            self._room_tasks.add(task)
            task.add_done_callback(self._room_tasks.discard)

    async def _wait_for_room(self, room: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(room, self.server.room_timeout_seconds)
        except TimeoutError:
            timeout = self.server.room_timeout_seconds
            self.close(f"dropped: the pipeline took no media for {timeout:g} s")
        finally:
            self._room.set()

    def _finish(self, reason: str) -> None:
        for task in list(self._room_tasks):
            task.cancel()
        if not self._session_open:
            return
        self._session_open = False
        assert self._session is not None
        try:
            self._session.on_close(reason)
        except Exception:
            logger.exception("%s session on_close failed", self.prefix)

    # The connection's thread

    def _run(self) -> None:
        reason = "closed"
        try:
            if self._wait_for_admission():
                reason = self._read()
        except Exception:
            logger.exception("%s reader failed", self.prefix)
            reason = "dropped: internal error"
        finally:
            self._socket_open = False
            libsrt.close(self.sock)
            with self._reason_lock:
                reason = self._close_reason or reason
            try:
                self._loop.call_soon_threadsafe(self._finish, reason)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                pass
            slot, self._slot = self._slot, None
            self.server._release(slot)
            self.server._forget(self)
            logger.info("%s closed: %s", self.prefix, reason)

    def _wait_for_admission(self) -> bool:
        """Whether the publisher was admitted (and is not closing already)."""
        future = asyncio.run_coroutine_threadsafe(self._admit(), self._loop)
        while True:
            try:
                return future.result(timeout=RECEIVE_TIMEOUT_MS / 1000) is not None
            except concurrent.futures.TimeoutError:
                if self._closing.is_set():
                    future.cancel()
            except concurrent.futures.CancelledError:
                return False

    def _read(self) -> str:
        buffer = libsrt.receive_buffer()
        address = ctypes.addressof(buffer)
        while not self._closing.is_set():
            if not self._room.is_set():
                self._room.wait(RECEIVE_TIMEOUT_MS / 1000)
                continue
            try:
                size = libsrt.receive(self.sock, buffer)
            except SrtError as exc:
                if exc.code in (libsrt.SRT_ETIMEOUT, libsrt.SRT_EASYNCRCV):  # no data yet
                    continue
                if exc.code in _DISCONNECTED:
                    return "publisher disconnected"
                return f"dropped: {exc.message}"
            data = self.aligner.feed(ctypes.string_at(address, size))
            if not data:
                continue
            while not self._inflight.acquire(timeout=RECEIVE_TIMEOUT_MS / 1000):
                if self._closing.is_set():
                    return "closed"
            self._loop.call_soon_threadsafe(self._deliver, data)
        return "closed"
