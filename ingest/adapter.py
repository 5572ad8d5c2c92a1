"""The one session adapter: an admitted publisher's stream, into one LiveDecoder session.

Whatever the protocol, admission builds a `DecoderSession` from the request and
returns it to the server as its `PublishSession`. It starts a decoder session in the
request's container at once and forwards what the server feeds it (`on_data` bytes,
or RTMP's `on_metadata` / `on_media`), with three rules:

- stale sessions go quiet: once the decoder moved on (a newer session took it over,
  or it ended this one itself, refusing the source), nothing more of this one is
  forwarded and its late close does not end the newer session;
- a refused source (too large, from the decoder, on any thread) is refused once:
  the publisher is rejected through `request.reject` on the event loop, and nothing
  more of it is taken;
- the owner hears about it through callbacks: `on_first_media(session)` at the first
  media, `on_closed(session, reason)` once at the end (`refused` and `media_seen`
  say whether it was refused before any media came).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from ingest.decode import LiveDecoder
from ingest.session import PublishRequest


class DecoderSession:
    """A `PublishSession` feeding one `LiveDecoder` session. Build it on the event loop."""

    def __init__(
        self,
        decoder: LiveDecoder,
        request: PublishRequest,
        *,
        on_first_media: Callable[[DecoderSession], None] | None = None,
        on_closed: Callable[[DecoderSession, str], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.decoder = decoder
        self.request = request
        self._on_first_media = on_first_media
        self._on_closed = on_closed
        self._loop = loop or asyncio.get_running_loop()
        self._media_seen = False
        self._closed = False
        self._refused: str | None = None
        self.index = decoder.start_session(request.container, on_refused=self.refuse)

    @property
    def active(self) -> bool:
        """Whether the decoder is still on this session."""
        return self.decoder.current_session == self.index

    @property
    def refused(self) -> str | None:
        """Why the source was refused, or None."""
        return self._refused

    @property
    def media_seen(self) -> bool:
        return self._media_seen

    @property
    def closed(self) -> bool:
        return self._closed

    def _taking(self) -> bool:
        return not self._closed and self._refused is None and self.active

    def _media(self) -> None:
        if not self._media_seen:
            self._media_seen = True
            if self._on_first_media is not None:
                self._on_first_media(self)

    # PublishSession

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        if self._taking():
            self.decoder.on_metadata(metadata)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        if self._taking():
            self._media()
            self.decoder.on_media(kind, timestamp_ms, payload)

    def on_data(self, data: bytes) -> None:
        if self._taking() and data:
            self._media()
            self.decoder.on_data(data)

    def wait_for_room(self) -> asyncio.Future[None] | None:
        if not self._taking():
            return None
        loop = self._loop
        room: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not room.done():
                room.set_result(None)

        def from_decoder() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle)

        return room if self.decoder.when_room(from_decoder) else None

    def on_close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self.active:
            self.decoder.end_session(reason)
        if self._on_closed is not None:
            self._on_closed(self, reason)

    # The job's side

    def refuse(self, reason: str) -> None:
        """The source itself is refused (any thread): reject the publisher, say why."""
        if self._refused is not None:
            return
        self._refused = reason
        # From the decode thread too: the connection lives on the loop.
        self._loop.call_soon_threadsafe(self.request.reject, reason)

    def close(self, reason: str) -> None:
        """Drop the publisher's connection (from the loop: job offline, pipeline failed)."""
        self.request.close(reason)
