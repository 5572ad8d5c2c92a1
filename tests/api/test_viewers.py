"""The WebSocket viewers' limits and tokens, alone (the whole path, with ffmpeg and real
clients, is tests/test_viewers_e2e.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from api.settings import Settings
from api.viewers import Viewers


class Secrets:
    def secret(self, name: str) -> str:
        return f"secret of {name}"


def viewers(clock: list[float], **settings: Any) -> Viewers:
    return Viewers(
        Settings(**settings),
        lives=None,  # type: ignore[arg-type]
        store=Secrets(),  # type: ignore[arg-type]
        registry=CollectorRegistry(),
        clock=lambda: clock[0],
    )


def test_viewers_are_limited_per_live_and_per_host() -> None:
    host = viewers([0.0], viewers_per_live=2, viewers_per_host=3)
    assert host.admit(1) is None and host.admit(1) is None
    assert "this live" in (host.admit(1) or "")
    assert host.admit(2) is None
    assert "this host" in (host.admit(3) or "")
    host.release(1)
    assert host.admit(3) is None and host.watching(1) == 1


async def test_a_token_opens_one_purpose_of_one_live_until_it_expires() -> None:
    clock = [1000.0]
    host = viewers(clock, viewer_token_seconds=60)
    job = {"id": 1, "name": "live-a", "project_id": "p"}
    other = {"id": 2, "name": "live-b", "project_id": "p"}
    token, expires = await host.token(job, "view")
    assert expires == 1060
    assert await host.token_problem(job, "view", token) is None
    assert "of this live" in (await host.token_problem(other, "view", token) or "")
    assert await host.token_problem(job, "events", token) is not None  # another purpose
    assert "not a view token" in (await host.token_problem(job, "view", "garbage") or "")
    clock[0] = 1060.0
    assert "expired" in (await host.token_problem(job, "view", token) or "")
