"""SRT test peers: a lossy UDP relay, and what the SRT tools are called with.

`LossyRelay` sits between SRT publishers and a server: each publisher gets its own
upstream UDP socket to the server, and a seeded random generator drops a fraction of
the datagrams in each direction (data, control, handshakes alike), as a bad link does.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import cast


@dataclass
class RelayCounts:
    forwarded: int = 0
    dropped: int = 0


@dataclass
class _Direction:
    loss: float
    rng: random.Random
    counts: RelayCounts = field(default_factory=RelayCounts)

    def keep(self) -> bool:
        if self.rng.random() < self.loss:
            self.counts.dropped += 1
            return False
        self.counts.forwarded += 1
        return True


class _Upstream(asyncio.DatagramProtocol):
    """One publisher's socket towards the server: what comes back goes to the publisher."""

    def __init__(self, relay: LossyRelay, publisher: tuple[str, int]) -> None:
        self.relay = relay
        self.publisher = publisher
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        downstream = self.relay.downstream
        if downstream is not None and self.relay.to_publisher.keep():
            downstream.sendto(data, self.publisher)


class _Downstream(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.from_publisher(data, addr)


class LossyRelay:
    """A UDP relay on 127.0.0.1 dropping `loss` of the datagrams each way (seeded)."""

    def __init__(self, target: tuple[str, int], loss: float, *, seed: int = 1) -> None:
        self.target = target
        rng = random.Random(seed)
        self.to_server = _Direction(loss, random.Random(rng.random()))
        self.to_publisher = _Direction(loss, random.Random(rng.random()))
        self.downstream: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], _Upstream] = {}
        self._opening: dict[tuple[str, int], list[bytes]] = {}
        self.port = 0

    async def start(self) -> int:
        """Bind a free port; returns it."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Downstream(self), local_addr=("127.0.0.1", 0)
        )
        self.downstream = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def from_publisher(self, data: bytes, publisher: tuple[str, int]) -> None:
        if not self.to_server.keep():
            return
        upstream = self._upstreams.get(publisher)
        if upstream is not None and upstream.transport is not None:
            upstream.transport.sendto(data)
            return
        queued = self._opening.get(publisher)
        if queued is not None:
            queued.append(data)
            return
        self._opening[publisher] = [data]
        asyncio.get_running_loop().create_task(self._open(publisher))

    async def _open(self, publisher: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, publisher), remote_addr=self.target
        )
        self._upstreams[publisher] = protocol
        for data in self._opening.pop(publisher, []):
            transport.sendto(data)

    async def stop(self) -> None:
        for upstream in self._upstreams.values():
            if upstream.transport is not None:
                upstream.transport.close()
        self._upstreams.clear()
        if self.downstream is not None:
            self.downstream.close()
            self.downstream = None
        await asyncio.sleep(0)


def srt_url(port: int, stream_id: str, *, latency_ms: int = 120, **params: str) -> str:
    """An ffmpeg SRT caller URL: its latency is in microseconds; `linger` (seconds)
    makes the publisher send what it still holds before it closes (libsrt's live
    mode default is to throw it away)."""
    query = "&".join(
        [f"streamid={stream_id}", f"latency={latency_ms * 1000}"]
        + [f"{name}={value}" for name, value in params.items()]
    )
    return f"srt://127.0.0.1:{port}?{query}"


TS_NULL_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184
SRT_LIVE_PAYLOAD_BYTES = 1316  # 7 TS packets: what SRT live publishers send per datagram


def pad_to_datagrams(ts: bytes) -> bytes:
    """`ts` with null packets after it up to a whole number of 1316-byte datagrams:
    srt-live-transmit drops a last short read of its input."""
    missing = (-len(ts)) % SRT_LIVE_PAYLOAD_BYTES
    assert missing % len(TS_NULL_PACKET) == 0
    return ts + TS_NULL_PACKET * (missing // len(TS_NULL_PACKET))


def live_transmit_cmd(port: int, stream_id: str, **params: str) -> list[str]:
    """srt-live-transmit (Debian srt-tools) sending its stdin (a pipe: it polls it) to
    the server, 1316 bytes per message, without reconnecting."""
    query = "&".join([f"streamid={stream_id}"] + [f"{k}={v}" for k, v in params.items()])
    return [
        "srt-live-transmit",
        "-a",
        "no",
        "-c",
        str(SRT_LIVE_PAYLOAD_BYTES),
        "-q",
        "file://con",
        f"srt://127.0.0.1:{port}?{query}",
    ]


async def feed_paced(stdin: asyncio.StreamWriter, data: bytes, *, bytes_per_second: float) -> None:
    """Write `data` in 4-datagram pieces at about `bytes_per_second` (a burst far
    faster than the stream's own rate overflows a live sender's buffers)."""
    piece = SRT_LIVE_PAYLOAD_BYTES * 4
    for offset in range(0, len(data), piece):
        stdin.write(data[offset : offset + piece])
        await stdin.drain()
        await asyncio.sleep(piece / bytes_per_second)
