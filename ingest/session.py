"""What every ingest server has in common: the publish request, the session it
feeds, and the refusal. Nothing here knows a wire protocol.

An ingest server (RTMP today; SRT and HLS next) turns a connection into a
`PublishRequest` and awaits the admit callback with it, before it reads any media:

    session = await admit(PublishRequest(IngestProtocol.SRT, "live", key, remote,
                                         MPEGTS, close=..., reject=...))

`admit` either raises `PublishRefused` (the server answers in its own terms:
`PublishRefused.status` is an HTTP status, which an HLS server sends as is, an SRT
server as reject reason 1000 + status (SRT_REJX_*), and the RTMP server maps to an
onStatus code), or returns the `PublishSession` that receives the stream, on the
event loop, until `on_close`:

- a server of a byte-stream container (SRT: MPEG-TS; HLS: its segments, in order)
  calls `on_data(bytes)` with whatever it received, in any chunk sizes;
- the RTMP server calls `on_metadata` (onMetaData) and `on_media` with each audio and
  video message, FLV-tag-shaped (an RTMP message body is an FLV tag body);
- either calls `on_close(reason)` once, when the publisher has gone or was dropped.

The request names the container its bytes are in (`FLV`, `MPEGTS`); the decoder
opens that format. `close` and `reject` let the job's side drop the publisher
later (the job goes offline; the source turns out to be too large).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

# Container formats, as PyAV (FFmpeg) names them.
FLV = "flv"
MPEGTS = "mpegts"
CONTAINERS = frozenset({FLV, MPEGTS})


def masked_key(key: str) -> str:
    """A stream key as every ingest server logs it: a secret, so only a prefix."""
    return key[:3] + "…" if len(key) > 6 else "…"


# The applications a publisher publishes under (the RTMP app, SRT's `r=APP/KEY`, the
# HLS push path's first component, onair's own puller's): a job's primary input, and a
# Standard job's backup input.
INGEST_APP, BACKUP_APP = "live", "backup"
HLS_PUSH_APP, HLS_BACKUP_APP = "hls", "hls-backup"
PULL_APP, PULL_BACKUP_APP = "pull", "pull-backup"
# Another onair host relaying a publisher of a job whose lease this host holds (RTMP,
# whatever the publisher's own protocol): the primary's and the backup's.
RELAY_APP, RELAY_BACKUP_APP = "relay", "relay-backup"


class IngestProtocol(enum.IntEnum):
    """How the publisher sends; the values are the API's `serverType`."""

    RTMP = 0
    SRT = 1
    HLS = 2


@dataclass(frozen=True)
class TransportStatistics:
    """What a transport measures of its own (SRT): shown beside the media statistics."""

    rtt_ms: float  # round-trip time, smoothed
    packets_received: int
    packets_lost: int  # never arrived (before any retransmission)
    packets_retransmitted: int  # the publisher sent again
    packets_dropped: int  # too late for the latency: given up
    bandwidth_mbps: float  # the link's estimated capacity


@dataclass(frozen=True)
class PublishRequest:
    """What a publisher asks for; given to the admit callback before any media is read."""

    protocol: IngestProtocol
    app: str  # the application the key is published under (RTMP connect's "app"), no "/"
    stream_key: str  # the key alone (RTMP: any "?query" stripped)
    remote: str  # "ip:port" of the publisher
    container: str  # FLV or MPEGTS: what the session's media is in
    # Both are called from the event loop. `close(reason)` drops the connection;
    # `reject(reason)` refuses what is being published after all, telling the
    # publisher why where the protocol can (RTMP: onStatus NetStream.Publish.Rejected),
    # then drops the connection.
    close: Callable[[str], None]
    reject: Callable[[str], None]
    url: str | None = None  # where the publisher says it connected (RTMP tcUrl); no key
    # The transport's own statistics now (SRT), from any thread; None: it has none.
    transport_stats: Callable[[], TransportStatistics | None] | None = None
    # What followed the key after "?" (RTMP's stream name), as sent; may hold a
    # secret (a relay's token): never logged.
    query: str = field(default="", repr=False)


class PublishRefused(Exception):
    """Raised by an admit callback to refuse a publish, before any media is read.

    `description` is told to the publisher where the protocol can carry it; `status`
    says what kind of refusal it is, as an HTTP status (each server maps it to its
    own wire: RTMP onStatus BadName, or Failed for a 5xx; SRT reject 1000 + status;
    HLS the status itself)."""

    def __init__(self, description: str, status: HTTPStatus = HTTPStatus.FORBIDDEN) -> None:
        super().__init__(description)
        self.description = description
        self.status = status


class PublishSession(Protocol):
    """Receives one admitted publisher's stream, on the event loop; must not block.

    A server calls the methods that fit its container: `on_data` for byte-stream
    containers (MPEG-TS), `on_metadata` and `on_media` for RTMP's FLV-shaped
    messages; then `on_close` once."""

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        """What the publisher declares about its stream (RTMP onMetaData)."""

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        """One FLV-shaped audio (8) or video (9) tag body with its timestamp."""

    def on_data(self, data: bytes) -> None:
        """The next bytes of the session's container, as they came (any size)."""

    def wait_for_room(self) -> Awaitable[None] | None:
        """None while the session takes more at once; else what to await before
        reading more from the publisher (the pipeline is behind a publisher faster than
        real time): its transport's flow control (TCP's, SRT's) slows the publisher
        instead of media being lost. A server bounds the wait (a stuck pipeline)."""

    def on_close(self, reason: str) -> None:
        """The publisher is gone (or was dropped); nothing more follows."""


AdmitCallback = Callable[[PublishRequest], Awaitable[PublishSession]]
