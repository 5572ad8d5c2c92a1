"""A live's restreams: one `Forwarder` per enabled destination, kept in step with the
control plane's list (`update`), each on its own thread and its own reader of the
live's source track (and, for a source FLV cannot carry, of its encoded track:
`restream.rendition`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from encoder.encoded import EncodedItem
from ingest.media import SourceItem
from media.fanout import Broadcast
from media.outbound import OutboundPolicy

from .forwarder import Connect, Destination, Forwarder, ForwarderStatus, RestreamState, rtmp_connect

logger = logging.getLogger(__name__)

# (the restream, its new state, a message), from the forwarder's thread
OnChange = Callable[[Destination, RestreamState, str], None]


class LiveRestreams:
    """The restreams of one live (see the module)."""

    def __init__(
        self,
        source: Broadcast[SourceItem],
        policy: OutboundPolicy,
        *,
        on_state: OnChange | None = None,
        slate_image: Path | None = None,
        slate_max_seconds: float = 30.0,
        connect: Connect = rtmp_connect,
        label: str = "",
        ladder: Broadcast[EncodedItem] | None = None,
        rendition: Callable[[], str | None] | None = None,
    ) -> None:
        self._source = source
        self._policy = policy
        self._on_state = on_state
        self._slate_image = slate_image
        self._slate_max_seconds = slate_max_seconds
        self._connect = connect
        self._label = label
        self._ladder = ladder  # the encoded track, and its top rendition's name
        self._rendition = rendition
        self._lock = threading.Lock()
        self._forwarders: dict[int, Forwarder] = {}
        self._closed = False

    def update(self, destinations: list[Destination]) -> None:
        """Forward to exactly these: new ones start now, removed (or changed) ones stop."""
        wanted = {d.id: d for d in destinations}
        with self._lock:
            if self._closed:
                return
            stopping = [
                f for rid, f in self._forwarders.items() if wanted.get(rid) != f.destination
            ]
            for forwarder in stopping:
                del self._forwarders[forwarder.destination.id]
            starting = [
                self._forwarder(d) for rid, d in wanted.items() if rid not in self._forwarders
            ]
            for forwarder in starting:
                self._forwarders[forwarder.destination.id] = forwarder
        for forwarder in stopping:
            forwarder.stop()
        for forwarder in starting:
            forwarder.start()

    def statuses(self) -> dict[int, ForwarderStatus]:
        with self._lock:
            forwarders = list(self._forwarders.values())
        return {f.destination.id: f.status() for f in forwarders}

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """The live ended (its source track closed): every restream sends what it has
        queued, for up to `timeout_seconds` in all, then stops."""
        with self._lock:
            self._closed = True
            forwarders = list(self._forwarders.values())
            self._forwarders.clear()
        deadline = time.monotonic() + timeout_seconds
        for forwarder in forwarders:
            forwarder.join(max(0.0, deadline - time.monotonic()))
        for forwarder in forwarders:
            forwarder.stop()

    def _forwarder(self, destination: Destination) -> Forwarder:
        on_state = self._on_state

        def changed(restream_id: int, state: RestreamState, message: str) -> None:
            if on_state is not None:
                on_state(destination, state, message)

        return Forwarder(
            destination,
            self._source,
            self._policy,
            on_state=changed,
            connect=self._connect,
            slate_image=self._slate_image,
            slate_max_seconds=self._slate_max_seconds,
            ladder=self._ladder,
            rendition=self._rendition,
            label=self._label,
        )
