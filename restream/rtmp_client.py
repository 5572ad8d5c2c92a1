"""A blocking RTMP/RTMPS publishing client: one connection that forwards FLV tags.

It runs on a restream's own thread (no event loop). It speaks with onair's pure
codec (`ingest.rtmp`): the simple handshake, then `connect`, `releaseStream`,
`FCPublish`, `createStream` and `publish(key, "live")` as FMLE/OBS do, and waits for
`NetStream.Publish.Start`. After that it writes audio, video and data messages and
answers what the server asks for (acknowledgements, pings, its chunk size).

Every connection goes through the outbound guard (`media.outbound`): the host is
resolved and checked at each connect; RTMPS verifies the certificate against the
policy's CAs, with no fallback.

Errors: `RtmpRefused` when the destination said no (`_error`, an error `onStatus`,
or closing the connection instead of answering `connect` or starting the publish:
nginx-rtmp's answer to an unknown application or a refused `on_publish`);
`RtmpFailed` for everything else (DNS, connect, TLS, timeouts, a reset, a destination
that stopped reading or closed). `RtmpAddressRefused`, an `RtmpFailed`, is the guard
refusing the address (a private one under the default policy): nothing was sent;
the guard's `OutboundRefused` is its `__cause__`. No message and no log line holds
the stream key (`restream.redact`).

Bounds: the reader refuses server messages over 1 MiB and more than 64 chunk
streams; sends are buffered up to `FLUSH_BYTES` and then flushed; a flush that makes
no progress for `stall_seconds` fails instead of blocking.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

from ingest.formats import amf0
from ingest.rtmp import handshake, messages
from ingest.rtmp.chunk import ChunkReader, ChunkWriter
from ingest.rtmp.errors import RtmpError as _CodecError
from ingest.rtmp.messages import Command, Message
from media.outbound import (
    OutboundFailed,
    OutboundPolicy,
    OutboundRefused,
    connect_address_blocking,
)

from .redact import display_url, redact

log = logging.getLogger(__name__)

FLASH_VER = "FMLE/3.0 (compatible; onair)"
CHUNK_SIZE = 4096
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
FLUSH_BYTES = 256 * 1024  # `send` flushes by itself past this much buffered
MAX_SERVER_MESSAGE_BYTES = 1024 * 1024  # a server sends commands, never media
MAX_SERVER_CHUNK_STREAMS = 64
MAX_HELD_COMMANDS = 64  # server commands kept for the publish sequence
CLOSE_SECONDS = 1.0  # how long `close` may spend on FCUnpublish/deleteStream
_RECV_BYTES = 65536
_SEND_BYTES = 16384  # one TLS record; a retried TLS write repeats the same length

# Chunk stream ids (FMLE/ffmpeg conventions)
COMMAND_CSID = 3
AUDIO_CSID = 4
DATA_CSID = 5
VIDEO_CSID = 6
_CSIDS = {messages.AUDIO: AUDIO_CSID, messages.VIDEO: VIDEO_CSID, messages.DATA_AMF0: DATA_CSID}

_ON_METADATA = amf0.encode("onMetaData")
_SET_DATA_FRAME = amf0.encode("@setDataFrame")
_IGNORED_COMMANDS = frozenset({"onBWDone", "onFCPublish", "onFCUnpublish", "_checkbw"})

# Transaction ids of the publish sequence
_TXN_CONNECT, _TXN_RELEASE, _TXN_FCPUBLISH, _TXN_CREATE, _TXN_PUBLISH = 1, 2, 3, 4, 5
_TXN_FCUNPUBLISH, _TXN_DELETE = 6, 7


class RtmpError(Exception):
    """A publish did not start or broke; the message names the destination, never the key."""


class RtmpRefused(RtmpError):
    """The destination refused: an `_error`, an error `onStatus`, or a close instead of
    answering `connect` or `publish`. Retrying the same key and URL will not help."""


class RtmpFailed(RtmpError):
    """The connection failed: DNS, connect, TLS, a timeout, a reset, a stall, a close."""


class RtmpAddressRefused(RtmpFailed):
    """The outbound guard refused the destination's address; nothing was sent to it.
    `__cause__` is the guard's `OutboundRefused`."""


class RtmpCertificateError(RtmpFailed):
    """RTMPS: the destination's certificate could not be verified (never bypassed)."""


class FlvTagLike(Protocol):
    """What `send_tags` takes: an FLV tag's type, timestamp and body."""

    @property
    def kind(self) -> int: ...

    @property
    def timestamp_ms(self) -> int: ...

    @property
    def payload(self) -> bytes: ...


def split_stream_url(stream_url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, app) of `rtmp[s]://host[:port]/app[/more]`; ValueError if not."""
    parts = urlsplit(stream_url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an rtmp:// or rtmps:// URL (scheme {scheme or 'missing'!r})")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    port = parts.port or DEFAULT_PORTS[scheme]  # ValueError for a port out of range
    app = parts.path.strip("/")
    if not app:
        raise ValueError("the URL has no application (rtmp://host/app)")
    return scheme, host, port, app


class RtmpPublisher:
    """One publishing connection. Make it with `connect()`; then `send()`/`send_tags()`
    and `flush()`; `close()` ends it (idempotent, never raises). Not thread-safe: one
    thread owns it."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        label: str,
        stream_key: str,
        stall_seconds: float = 5.0,
    ) -> None:
        self._sock = sock
        self._label = label  # `rtmp://host/app/{abc…xyz}`
        self._key = stream_key
        self.stall_seconds = stall_seconds
        self.bytes_sent = 0  # bytes written to the socket, the handshake included
        self._reader = ChunkReader(
            max_message_bytes=MAX_SERVER_MESSAGE_BYTES,
            max_chunk_streams=MAX_SERVER_CHUNK_STREAMS,
        )
        self._writer = ChunkWriter()
        self._out = bytearray()  # whole chunked messages, so control can be appended
        self._retry_len = 0  # a TLS write that must be retried with this length
        self._commands: list[Command] = []  # server commands, for the publish sequence
        self._stream_id = 0
        self._phase = "connect"  # what the server is answering: for errors
        self._published = False
        self._broken = False  # an I/O error happened: close() skips the goodbye
        self._closed = False
        sock.setblocking(False)

    # Connecting

    @classmethod
    def connect(
        cls,
        stream_url: str,
        stream_key: str,
        policy: OutboundPolicy,
        *,
        timeout_seconds: float = 10.0,
        stall_seconds: float = 5.0,
        preamble: bytes = b"",
    ) -> RtmpPublisher:
        """Connect to `stream_url` (`rtmp://host[:1935]/app`, `rtmps://host[:443]/app`)
        and publish `stream_key` (passed as it is, a `?query` included); returns once
        the server said `NetStream.Publish.Start`. The whole sequence has
        `timeout_seconds`; later flushes fail after `stall_seconds` without progress.
        `preamble` is sent first, before TLS and the handshake (a PROXY protocol
        header, for a server behind a load balancer)."""
        label = display_url(stream_url, stream_key)
        deadline = time.monotonic() + timeout_seconds
        try:
            scheme, host, _, app = split_stream_url(stream_url)
        except ValueError as exc:
            raise RtmpRefused(f"{label}: {redact(str(exc), stream_key)}") from None
        try:
            address = connect_address_blocking(stream_url, policy)
        except OutboundRefused as exc:
            raise RtmpAddressRefused(f"{label}: {redact(str(exc), stream_key)}") from exc
        except OutboundFailed as exc:
            raise RtmpFailed(f"{label}: {redact(str(exc), stream_key)}") from None
        sock = _open_socket(address.ip, address.port, label, deadline)
        try:
            if preamble:
                _send_preamble(sock, preamble, label, deadline)
            if scheme == "rtmps":
                sock = _wrap_tls(sock, host, policy, label, deadline)
            sent = _handshake(sock, label, deadline)
        except BaseException:
            sock.close()
            raise
        publisher = cls(sock, label=label, stream_key=stream_key, stall_seconds=stall_seconds)
        publisher.bytes_sent = sent
        try:
            publisher._publish(app, stream_url.rstrip("/"), deadline)
        except BaseException:
            publisher._abort()
            raise
        log.info("[rtmp %s] publishing (%s)", label, address.netloc)
        return publisher

    def _publish(self, app: str, tc_url: str, deadline: float) -> None:
        key = self._key
        self._out += self._writer.set_chunk_size(CHUNK_SIZE)
        connect = {
            "app": app,
            "type": "nonprivate",
            "flashVer": FLASH_VER,
            "tcUrl": tc_url,
            "swfUrl": tc_url,
        }
        self._command("connect", _TXN_CONNECT, connect)
        self._wait_for(_TXN_CONNECT, deadline)
        self._phase = "createStream"
        self._command("releaseStream", _TXN_RELEASE, None, key)
        self._command("FCPublish", _TXN_FCPUBLISH, None, key)
        self._command("createStream", _TXN_CREATE, None)
        created = self._wait_for(_TXN_CREATE, deadline)
        stream_id = created.args[0] if created.args else None
        if not amf0.is_number(stream_id) or not 0 < stream_id < 2**31:
            raise RtmpFailed(f"{self._label}: createStream answered no stream id")
        self._stream_id = int(stream_id)
        self._phase = "publish"
        self._command("publish", _TXN_PUBLISH, None, key, "live", stream_id=self._stream_id)
        self._wait_for(None, deadline)
        self._phase = "publishing"
        self._published = True

    def _command(self, name: str, txn: float, obj: Any, *args: Any, stream_id: int = 0) -> None:
        message = messages.command(name, txn, obj, *args, stream_id=stream_id)
        self._out += self._writer.write(COMMAND_CSID, message)

    def _wait_for(self, txn: float | None, deadline: float) -> Command:
        """The `_result` of `txn` (or, for None, `NetStream.Publish.Start`); what else
        arrives is handled or dropped; an `_error` or an error onStatus refuses."""
        while True:
            for at, cmd in enumerate(self._commands):
                if txn is not None and cmd.name == "_result" and cmd.transaction_id == txn:
                    del self._commands[: at + 1]
                    return cmd
                if txn is None and _status(cmd).get("code") == "NetStream.Publish.Start":
                    del self._commands[: at + 1]
                    return cmd
            self._commands.clear()
            self._write_some(deadline)
            if not self._out:
                self._read_some(deadline)

    # Sending

    def send(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        """Queue one FLV tag (8 audio, 9 video, 18 data) as an RTMP message; flushes by
        itself past `FLUSH_BYTES`. An `onMetaData` data tag goes out as
        `@setDataFrame onMetaData ...`, as publishers send it."""
        csid = _CSIDS.get(kind)
        if csid is None:
            raise ValueError(f"FLV tag type {kind} is not audio (8), video (9) or data (18)")
        self._check_open()
        if kind == messages.DATA_AMF0 and payload.startswith(_ON_METADATA):
            payload = _SET_DATA_FRAME + payload
        message = Message(kind, self._stream_id, timestamp_ms & 0xFFFFFFFF, payload)
        self._out += self._writer.write(csid, message)
        if len(self._out) >= FLUSH_BYTES:
            self.flush()

    def send_tags(self, tags: Iterable[FlvTagLike]) -> None:
        """`send` each tag, then `flush`."""
        for tag in tags:
            self.send(tag.kind, tag.timestamp_ms, tag.payload)
        self.flush()

    def flush(self) -> None:
        """Write what is buffered: first `poll()`, then write, answering the server
        meanwhile; `RtmpFailed("…stalled…")` when no byte goes out for `stall_seconds`."""
        self._check_open()
        try:
            self._flush()
        except RtmpError:
            self._broken = True
            raise

    def _flush(self) -> None:
        self._poll()
        progress_at = time.monotonic()
        while self._out:
            if self._write_some(None):
                progress_at = time.monotonic()
                continue
            left = progress_at + self.stall_seconds - time.monotonic()
            if left <= 0:
                raise RtmpFailed(f"{self._label}: stalled: the destination stopped reading")
            readable, _, _ = select.select([self._sock], [self._sock], [], left)
            if readable:
                self._read_available()

    def poll(self) -> None:
        """Handle what the server sent, without blocking: `RtmpRefused` for an error it
        sent, `RtmpFailed("…closed by the destination")` if it closed."""
        self._check_open()
        try:
            self._poll()
        except RtmpError:
            self._broken = True
            raise

    def _poll(self) -> None:
        self._read_available()
        self._commands.clear()  # errors were raised as they came; the rest needs no answer

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting for `flush`."""
        return len(self._out)

    # Ending

    def close(self) -> None:
        """FCUnpublish and deleteStream (best effort, within about a second), then close
        the socket. Never raises; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._published and not self._broken:
                self._out.clear()  # only after a failed flush could a partial write remain
                self._retry_len = 0
                self._command("FCUnpublish", _TXN_FCUNPUBLISH, None, self._key)
                self._command("deleteStream", _TXN_DELETE, None, float(self._stream_id))
                deadline = time.monotonic() + min(CLOSE_SECONDS, self.stall_seconds)
                while self._out and self._write_some(deadline):
                    pass
                # End so that the server reads everything: a reset (closing with
                # unread bytes) could make it drop the tail it has not read yet.
                self._phase = "closing"
                if isinstance(self._sock, ssl.SSLSocket):
                    self._read_available(eof_ok=True)
                    self._sock.settimeout(max(deadline - time.monotonic(), 0.01))
                    self._sock.unwrap()  # close_notify both ways
                else:
                    self._sock.shutdown(socket.SHUT_WR)
                    while self._read_some(deadline, eof_ok=True):  # to the server's close
                        pass
        except (RtmpError, OSError, ValueError):
            pass
        finally:
            self._abort()
            log.info("[rtmp %s] closed after %d bytes", self._label, self.bytes_sent)

    def __enter__(self) -> RtmpPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _abort(self) -> None:
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise RtmpFailed(f"{self._label}: the publisher is closed")

    # The socket

    def _write_some(self, deadline: float | None) -> bool:
        """Write buffered bytes; True if some went out. With a deadline, wait for the
        socket (reading meanwhile) until then; without one, do not wait."""
        while self._out:
            size = self._retry_len or min(len(self._out), _SEND_BYTES)
            try:
                sent = self._sock.send(self._out[:size])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                if isinstance(self._sock, ssl.SSLSocket):
                    self._retry_len = size
                if deadline is None:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RtmpFailed(f"{self._label}: timed out writing") from None
                readable, _, _ = select.select([self._sock], [self._sock], [], left)
                if readable:
                    self._read_available()
                continue
            except (ssl.SSLError, OSError) as exc:
                raise self._failure("writing", exc) from None
            self._retry_len = 0
            del self._out[:sent]
            self.bytes_sent += sent
            return True
        return False

    def _read_some(self, deadline: float, *, eof_ok: bool = False) -> bool:
        """Wait until `deadline` for bytes and handle them; False at EOF when `eof_ok`."""
        while True:
            got = self._read_available(eof_ok=eof_ok)
            if got is None:
                return False
            if got:
                return True
            left = deadline - time.monotonic()
            if left > 0:
                select.select([self._sock], [], [], left)
            if time.monotonic() >= deadline:
                raise RtmpFailed(f"{self._label}: timed out waiting for the {self._phase} answer")

    def _read_available(self, *, eof_ok: bool = False) -> bool | None:
        """Read and handle what is there now; True if bytes came, None at EOF (`eof_ok`)."""
        got = False
        while True:
            try:
                data = self._sock.recv(_RECV_BYTES)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return got
            except (ssl.SSLError, OSError) as exc:
                if eof_ok:
                    return None
                raise self._failure("reading", exc) from None
            if not data:
                if eof_ok:
                    return None
                raise self._closed_error()
            got = True
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            while (message := reader.next_message()) is not None:
                self._on_message(message)
        except _CodecError as exc:
            said = redact(str(exc), self._key)
            raise RtmpFailed(f"{self._label}: protocol error from the server: {said}") from None
        ack = reader.take_acknowledgement()
        if ack is not None:
            self._out += self._writer.write(
                messages.CONTROL_CHUNK_STREAM, messages.acknowledgement(ack)
            )

    def _on_message(self, message: Message) -> None:
        # Set Chunk Size and Window Acknowledgement Size took effect in the reader.
        if message.type_id == messages.USER_CONTROL:
            event, value = messages.parse_user_control(message.payload)
            if event == messages.PING_REQUEST and value is not None:
                pong = messages.user_control(messages.PING_RESPONSE, value)
                self._out += self._writer.write(messages.CONTROL_CHUNK_STREAM, pong)
        elif message.type_id in (messages.COMMAND_AMF0, messages.COMMAND_AMF3):
            cmd = messages.parse_command(message)
            if cmd.name == "_error" and cmd.transaction_id in (_TXN_RELEASE, _TXN_FCPUBLISH):
                return  # servers that do not know releaseStream/FCPublish say so
            if cmd.name == "_error" or _status(cmd).get("level") == "error":
                raise self._refusal(cmd)
            if cmd.name in _IGNORED_COMMANDS:
                return
            if len(self._commands) >= MAX_HELD_COMMANDS:
                del self._commands[: MAX_HELD_COMMANDS // 2]
            self._commands.append(cmd)

    # Errors

    def _refusal(self, cmd: Command) -> RtmpRefused:
        info = _status(cmd)
        code = str(info.get("code") or cmd.name)
        description = str(info.get("description") or "")
        said = redact(f"{code}: {description}" if description else code, self._key)
        log.warning("[rtmp %s] refused: %s", self._label, said)
        return RtmpRefused(f"{self._label}: refused: {said}")

    def _closed_error(self) -> RtmpError:
        if self._phase == "publish":
            # nginx-rtmp's answer to a refused on_publish.
            return RtmpRefused(f"{self._label}: closed after publish")
        if self._phase == "connect":
            # nginx-rtmp's answer to an unknown application.
            return RtmpRefused(f"{self._label}: closed after connect")
        return RtmpFailed(f"{self._label}: closed by the destination")

    def _failure(self, doing: str, exc: BaseException) -> RtmpFailed:
        return RtmpFailed(f"{self._label}: {doing}: {redact(_describe(exc), self._key)}")


def _status(cmd: Command) -> dict[str, Any]:
    """The info object of an `onStatus`/`_error` command, or {}."""
    for value in cmd.args:
        if isinstance(value, dict):
            return value
    return {}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate error: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _left(deadline: float, label: str, doing: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise RtmpFailed(f"{label}: {doing}: timed out")
    return left


def _open_socket(ip: str, port: int, label: str, deadline: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(_left(deadline, label, "connecting"))
        sock.connect((ip, port))
    except OSError as exc:
        sock.close()
        where = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        raise RtmpFailed(f"{label}: connecting to {where}: {_describe(exc)}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _send_preamble(sock: socket.socket, preamble: bytes, label: str, deadline: float) -> None:
    try:
        sock.settimeout(_left(deadline, label, "sending the preamble"))
        sock.sendall(preamble)
    except OSError as exc:
        raise RtmpFailed(f"{label}: sending the preamble: {_describe(exc)}") from None


def _wrap_tls(
    sock: socket.socket, host: str, policy: OutboundPolicy, label: str, deadline: float
) -> ssl.SSLSocket:
    """TLS over `sock`, the certificate verified for `host`: no fallback."""
    try:
        context = policy.ssl_context()
        sock.settimeout(_left(deadline, label, "TLS handshake"))
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise RtmpCertificateError(f"{label}: TLS handshake: {_describe(exc)}") from None
    except (ssl.SSLError, OSError) as exc:
        raise RtmpFailed(f"{label}: TLS handshake: {_describe(exc)}") from None


def _handshake(sock: socket.socket, label: str, deadline: float) -> int:
    """The simple RTMP handshake, blocking with the deadline; the bytes written."""
    try:
        c0c1 = handshake.client_c0c1()
        sock.settimeout(_left(deadline, label, "handshake"))
        sock.sendall(c0c1)
        response = bytearray()
        while len(response) < handshake.S0S1S2_SIZE:
            sock.settimeout(_left(deadline, label, "handshake"))
            data = sock.recv(handshake.S0S1S2_SIZE - len(response))
            if not data:
                raise RtmpFailed(f"{label}: handshake: closed by the destination")
            response += data
        s1, _ = handshake.parse_s0s1s2(bytes(response))
        c2 = handshake.client_c2(s1)
        sock.settimeout(_left(deadline, label, "handshake"))
        sock.sendall(c2)
    except _CodecError as exc:
        raise RtmpFailed(f"{label}: handshake: {exc}") from None
    except (ssl.SSLError, OSError) as exc:
        raise RtmpFailed(f"{label}: handshake: {_describe(exc)}") from None
    return len(c0c1) + len(c2)
