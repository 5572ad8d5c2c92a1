"""Glue: an admitted RTMP publisher's callbacks, forwarded into a job's LiveDecoder."""

from __future__ import annotations

from typing import Any

from ingest.decode import LiveDecoder
from ingest.rtmp.server import PublishSession


class DecodingSession(PublishSession):
    """A PublishSession that feeds one LiveDecoder session.

    Construct it in the admit callback (it starts a decoder session at once) and
    return it; the server's on_close ends that session. If a newer session took the
    decoder over (a reconnect while this connection lingers), this one goes quiet.
    """

    def __init__(self, decoder: LiveDecoder) -> None:
        self.decoder = decoder
        self.session = decoder.start_session()

    @property
    def active(self) -> bool:
        return self.decoder.current_session == self.session

    def on_metadata(self, metadata: dict[str, Any]) -> None:
        if self.active:
            self.decoder.on_metadata(metadata)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        if self.active:
            self.decoder.on_media(kind, timestamp_ms, payload)

    def on_close(self, reason: str) -> None:
        if self.active:
            self.decoder.end_session(reason)
