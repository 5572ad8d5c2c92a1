"""Live status values, as the reference names them."""

from __future__ import annotations

from enum import IntEnum


class LiveStatus(IntEnum):
    OFFLINE = 1
    PROCESSING = 2  # online, waiting for (or starting on) the publisher's media
    LIVE = 3
    INTERRUPTED = 4  # the publisher is gone; waiting for it within the reconnect window

    @property
    def label(self) -> str:
        return self.name.capitalize()


class HealthStatus(IntEnum):
    HEALTHY = 1
    STARVING = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.capitalize()
