"""Listening behind a load balancer that sends the PROXY protocol (`ingest.proxy_protocol`).

`ProxyFront` is a listener's protocol factory placed before the real one (an ingest
server's connection gate): each connection's first bytes must be a PROXY header,
complete within `timeout_seconds`; then the connection is handed to a protocol of the
real factory, with what followed the header, through a `ProxiedTransport` whose
`peername` is the client the header names. Everything after sees that address and
nothing else: the per-IP limits (`ingest.connlimit`, which then counts per client,
not per balancer), log prefixes, the `remote` of a `PublishRequest`. A header naming
no client (a balancer's own health check) keeps the socket's peer.

A connection without a valid header in time, or with a malformed or oversized one,
is aborted and `on_error(peer, reason)` is told (the server logs it, rate-limited);
not one byte of it reaches the real protocol. What waits for its header is bounded:
at most `max_waiting` connections (more are aborted at accept), each buffering at
most one header's bytes, for at most `timeout_seconds`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ingest.proxy_protocol import ProxyProtocolError, parse_header

DEFAULT_TIMEOUT_SECONDS = 5.0


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


class ProxiedTransport(asyncio.Transport):
    """A connection's transport as the protocol behind a `ProxyFront` sees it: the real
    one in everything but `get_extra_info("peername")`, the client's address."""

    def __init__(self, transport: asyncio.Transport, peername: tuple[str, int]) -> None:
        super().__init__()
        self._transport = transport
        self._peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


class ProxyFront:
    """A protocol factory for a listener behind a PROXY-protocol balancer: each
    connection's header first, then a protocol of `make_inner` (see the module).
    `close()` aborts every connection still waiting for its header."""

    def __init__(
        self,
        make_inner: Callable[[], asyncio.Protocol],
        on_error: Callable[[str, str], None],
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_waiting: int = 64,
    ) -> None:
        self.make_inner = make_inner
        self.on_error = on_error
        self.timeout_seconds = timeout_seconds
        self.max_waiting = max_waiting
        self.refused = 0  # connections closed without a valid header, or over max_waiting
        self._waiting: set[_HeaderProtocol] = set()
        self._closed = False

    def __call__(self) -> asyncio.Protocol:
        return _HeaderProtocol(self)

    @property
    def waiting_count(self) -> int:
        """Connections accepted whose header has not come yet."""
        return len(self._waiting)

    def close(self) -> None:
        """Abort the connections waiting for their header, and any accepted from now."""
        self._closed = True
        for connection in list(self._waiting):
            connection.abort()


class _HeaderProtocol(asyncio.Protocol):
    """One connection until its header is read; then the real protocol takes over."""

    def __init__(self, front: ProxyFront) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        front = self._front
        if front._closed:
            transport.abort()
            return
        if len(front._waiting) >= front.max_waiting:
            transport.abort()
            self._refuse(f"{len(front._waiting)} connections awaiting their PROXY header")
            return
        front._waiting.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(front.timeout_seconds, self._on_timeout)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self not in self._front._waiting:
            return
        self._buffer += data
        try:
            parsed = parse_header(self._buffer)
        except ProxyProtocolError as exc:
            self._fail(str(exc))
            return
        if parsed is None:
            return
        address, length = parsed
        rest = self._buffer[length:]
        self._forget()
        # The real protocol gets the transport's events from now on, and sees the
        # client's address (or, for a header that names none, the socket's own).
        inner = self._front.make_inner()
        transport.set_protocol(inner)
        proxied = transport if address is None else ProxiedTransport(transport, address.peername)
        inner.connection_made(proxied)
        if rest and not transport.is_closing():
            inner.data_received(rest)

    def eof_received(self) -> bool | None:
        if self in self._front._waiting:
            self._fail("closed before its PROXY header")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def abort(self) -> None:
        self._forget()
        if self._transport is not None:
            self._transport.abort()

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(f"no PROXY header within {self._front.timeout_seconds:g} s")

    def _fail(self, reason: str) -> None:
        self.abort()
        self._refuse(reason)

    def _refuse(self, reason: str) -> None:
        self._front.refused += 1
        peer = self._transport.get_extra_info("peername") if self._transport else None
        self._front.on_error(_format_peer(peer), reason)

    def _forget(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._front._waiting.discard(self)
