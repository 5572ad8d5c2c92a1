"""A Standard job's input relayed to the host that holds the job's lease.

A Standard job has two publishers, and a load balancer may send them to two hosts. Its
pipeline runs on the host holding its lease; a publisher that reaches another host is
admitted there as a relay (`LiveJobs.admit`). Nothing is decoded or encoded here: its
stream is demuxed as a pipeline's would be (`ingest.decode.LiveDecoder`, packets only)
and forwarded by the restream client (`restream.forwarder.Forwarder`) over RTMP to the
holder's relay application (`relay`, `relay-backup`), with a token made from the
holder's secret in the store (`api.hosts.relay_token`), so only hosts reading the store
can relay. The holder admits it as that input of the job, whatever the publisher's own
protocol (checked here). Where the holder's listener expects the PROXY protocol, the
header names the publisher, so the holder's timings show its address.

One publisher, one connection: the relay ends with its publisher (the holder sees the
input go and fails over), and the publisher is dropped when the holder refuses the
relay or the connection to it breaks (the holder died: the publisher's reconnect finds
the job free once the lease has expired). A host runs at most `MAX_RELAYS` relays, one
per input of a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import parse_qs

from encoder.program import BACKUP
from ingest.adapter import DecoderSession
from ingest.decode import LiveDecoder
from ingest.media import media_broadcast, source_broadcast
from ingest.proxy_protocol import v1_header
from ingest.session import RELAY_APP, RELAY_BACKUP_APP, PublishRequest
from media.outbound import OutboundPolicy
from restream.forwarder import Destination, Forwarder, Publisher, RestreamState
from restream.rtmp_client import RtmpPublisher

from .errors import AlreadyPublishing, HostAtCapacity
from .hosts import RelayTarget, relay_token

logger = logging.getLogger(__name__)

MAX_RELAYS = 32  # per host: each holds a demuxer thread and a connection, no encoder
STOP_SECONDS = 5.0


def token_of(request: PublishRequest) -> str:
    """The token a relay presents (its stream name's `?token=`); "" without one."""
    return parse_qs(request.query).get("token", [""])[0]


class InputRelay:
    """One publisher's stream, forwarded to the host holding its job's lease."""

    def __init__(
        self,
        job_id: int,
        input_name: str,
        request: PublishRequest,
        target: RelayTarget,
        policy: OutboundPolicy,
        *,
        on_end: Callable[[InputRelay, str], None],
        max_pixels: int | None = None,
    ) -> None:
        self.job_id = job_id
        self.input_name = input_name
        self.request = request
        self.target = target
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._ended = False
        self.label = f"job {job_id} {input_name} relay"
        self.source = source_broadcast(self.label)
        self.decoder = LiveDecoder(
            media_broadcast(self.label),  # read by nobody: nothing is decoded here
            decode=False,
            label=self.label,
            on_error=lambda exc: self._end(f"demuxing failed: {exc}"),
            max_pixels=max_pixels,
            source=self.source,
        )
        app = RELAY_BACKUP_APP if input_name == BACKUP else RELAY_APP
        token = relay_token(target.secret, job_id, input_name, request.stream_key)
        self.destination = Destination(
            0,
            f"encoder {target.encoder_id}",
            f"{target.url}/{app}",
            f"{request.stream_key}?token={token}",  # redacted whole in every log line
        )
        self._preamble = v1_header(request.remote) if target.proxy_protocol else b""
        self._forwarder = Forwarder(
            self.destination,
            self.source,
            # The holder's address is the store's, not a user's: private is its place.
            replace(policy, allow_private=True),
            on_state=self._state,
            connect=self._connect,
            slate_max_seconds=0,  # the publisher gone: the holder sees its input go
            label=self.label,
        )
        self.session = DecoderSession(self.decoder, request, on_closed=self._closed)

    @property
    def described(self) -> str:
        return (
            f"{self.request.remote} on the {self.input_name} input, relayed to encoder"
            f" {self.target.encoder_id} (which holds the job's lease)"
        )

    def start(self) -> None:
        self._forwarder.start()

    def _connect(self, destination: Destination, policy: OutboundPolicy) -> Publisher:
        return RtmpPublisher.connect(
            destination.stream_url, destination.stream_key, policy, preamble=self._preamble
        )

    def _state(self, _id: int, state: RestreamState, message: str) -> None:
        """The forwarder's thread: a refusal or a broken connection ends the relay."""
        if state is RestreamState.FORWARDING:
            logger.info(
                "[%s] relaying %s to encoder %d",
                self.label,
                self.request.remote,
                self.target.encoder_id,
            )
        elif state in (RestreamState.ERRORED, RestreamState.RECONNECTING):
            with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                self._loop.call_soon_threadsafe(self._end, message)

    def _closed(self, _session: DecoderSession, reason: str) -> None:
        self._end(reason)

    def _end(self, reason: str) -> None:
        """On the loop: once, whoever ends it (the publisher, the holder, a stop)."""
        if self._ended:
            return
        self._ended = True
        if not self.session.closed:
            self.session.close(f"relay to encoder {self.target.encoder_id} ended: {reason}")
        threading.Thread(target=self._wind_down, name=f"onair-{self.label}", daemon=True).start()
        self._on_end(self, reason)

    def _wind_down(self) -> None:
        """The demuxer drains into the source, the forwarder sends it, then both stop."""
        self.decoder.stop(STOP_SECONDS)
        self.source.close()
        if not self._forwarder.join(STOP_SECONDS):
            self._forwarder.stop()
            self._forwarder.join(1.0)

    def stop(self, reason: str) -> None:
        self._end(reason)


class InputRelays:
    """The relays this host runs (on the event loop)."""

    def __init__(self, policy: OutboundPolicy, max_pixels: int | None = None) -> None:
        self._policy = policy
        self._max_pixels = max_pixels
        self._relays: dict[tuple[int, str], InputRelay] = {}
        self.on_end: Callable[[InputRelay, str], None] | None = None

    def start(
        self, job_id: int, input_name: str, request: PublishRequest, target: RelayTarget
    ) -> InputRelay:
        """A relay of the publisher's stream to `target`, started; its `session` is the
        publisher's. AlreadyPublishing if the input is relayed already, HostAtCapacity
        past MAX_RELAYS."""
        if (job_id, input_name) in self._relays:
            raise AlreadyPublishing(
                "this stream key is already publishing", "the input is relayed from here already"
            )
        if len(self._relays) >= MAX_RELAYS:
            raise HostAtCapacity(
                "this host relays as many inputs as it may: try another host",
                f"{MAX_RELAYS} inputs relayed from this host",
            )
        relay = InputRelay(
            job_id,
            input_name,
            request,
            target,
            self._policy,
            on_end=self._ended,
            max_pixels=self._max_pixels,
        )
        self._relays[(job_id, input_name)] = relay
        relay.start()
        return relay

    def _ended(self, relay: InputRelay, reason: str) -> None:
        if self._relays.get((relay.job_id, relay.input_name)) is relay:
            del self._relays[(relay.job_id, relay.input_name)]
        if self.on_end is not None:
            self.on_end(relay, reason)

    def stop(self, reason: str) -> None:
        for relay in list(self._relays.values()):
            relay.stop(reason)
