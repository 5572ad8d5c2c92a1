"""Bounding connections: in total and per remote address, refused at accept.

`ConnectionLimiter` counts slots; `GatedProtocol` sits between an asyncio listener and
the real protocol: at `connection_made` it takes a slot for the peer's address or, past
a limit, aborts the transport at once: nothing is read, no reader, buffer or task of
ours is made, and the socket is closed by the `connection_lost` the abort schedules
(asyncio's own accept task for it ends as well). While a burst is accepted, refused
sockets therefore exist for a few loop iterations: about `backlog` (accepted per
iteration) times a few, on top of the slots. The slot is given back when the
connection is lost, or earlier by its owner (`Slot.release()`, e.g. once an RTMP
connection publishes and stops counting as pending).

Used by the RTMP ingest and by the control API's listener: nothing a stranger opens
holds more than the limits' worth of file descriptors.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable


def _abort(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


def is_loopback(address: str) -> bool:
    """Whether `address` is this host's (127.0.0.0/8, ::1, or IPv4-mapped 127.x)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The remote IP of a transport ("" when unknown, e.g. a Unix socket)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""


class Slot:
    """One counted connection; `release()` gives it back (idempotent)."""

    __slots__ = ("_limiter", "address")

    def __init__(self, limiter: ConnectionLimiter, address: str) -> None:
        self._limiter: ConnectionLimiter | None = limiter
        self.address = address

    @property
    def held(self) -> bool:
        return self._limiter is not None

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self.address)


class ConnectionLimiter:
    """At most `max_total` slots held, and at most `max_per_address` per remote address.

    Addresses for which `per_address_exempt(address)` is true have only the total limit:
    e.g. loopback, where a local proxy (an RTMPS or HTTPS terminator) or a local encoder
    makes many peers share one address.
    """

    def __init__(
        self,
        max_total: int,
        max_per_address: int,
        *,
        per_address_exempt: Callable[[str], bool] | None = None,
    ) -> None:
        if max_total < 1 or max_per_address < 1:
            raise ValueError("connection limits must be positive")
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._exempt = per_address_exempt
        self.total = 0
        self.refused_total = 0  # over max_total
        self.refused_per_address = 0  # over max_per_address
        self._per_address: dict[str, int] = {}

    @property
    def refused(self) -> int:
        return self.refused_total + self.refused_per_address

    def held_by(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def acquire(self, address: str) -> Slot | None:
        """A slot for `address`, or None (counted as refused) when a limit is reached."""
        if self.total >= self.max_total:
            self.refused_total += 1
            return None
        held = self._per_address.get(address, 0)
        if held >= self.max_per_address and not (self._exempt and self._exempt(address)):
            self.refused_per_address += 1
            return None
        self._per_address[address] = held + 1
        self.total += 1
        return Slot(self, address)

    def refusal_reason(self, address: str, what: str = "connections") -> str:
        """Why `acquire(address)` refuses now, for its log line: "64 connections (limit 64)"."""
        if self.total >= self.max_total:
            return f"{self.total} {what} (limit {self.max_total})"
        held = self.held_by(address)
        return f"{held} {what} from {address or 'this address'} (limit {self.max_per_address})"

    def _release(self, address: str) -> None:
        self.total -= 1
        held = self._per_address.get(address, 0) - 1
        if held > 0:
            self._per_address[address] = held
        else:
            self._per_address.pop(address, None)


class GatedProtocol(asyncio.Protocol):
    """Admits a connection through a `ConnectionLimiter`, then delegates to a real protocol.

    `make_inner(slot)` builds the real protocol for an admitted connection;
    `on_refused(transport, address)` is called after a refused one was aborted (to log
    it; the limiter counted it). While `refuse_all()` is true (e.g. the server is
    stopping) every connection is aborted.
    """

    __slots__ = ("_inner", "_limiter", "_make_inner", "_on_refused", "_refuse_all", "_slot")

    def __init__(
        self,
        limiter: ConnectionLimiter,
        make_inner: Callable[[Slot], asyncio.Protocol],
        on_refused: Callable[[asyncio.BaseTransport, str], None],
        refuse_all: Callable[[], bool] = lambda: False,
    ) -> None:
        self._limiter = limiter
        self._make_inner = make_inner
        self._on_refused = on_refused
        self._refuse_all = refuse_all
        self._inner: asyncio.Protocol | None = None
        self._slot: Slot | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._refuse_all():
            _abort(transport)
            return
        address = peer_address(transport)
        slot = self._limiter.acquire(address)
        if slot is None:
            # abort(): no FIN handshake to wait for, no buffer; the fd is closed by the
            # connection_lost the transport schedules right away.
            _abort(transport)
            self._on_refused(transport, address)
            return
        self._slot = slot
        try:
            self._inner = self._make_inner(slot)
            self._inner.connection_made(transport)
        except BaseException:
            slot.release()
            _abort(transport)
            raise

    def connection_lost(self, exc: Exception | None) -> None:
        if self._slot is not None:
            self._slot.release()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
