"""A webhook receiver for tests: a local aiohttp server that verifies every request with
`standardwebhooks` (as a user's receiver would) and keeps what it got, in order.

It can be taken down (its port closed: connections refused) and brought up again on
the same port, answer a status of the test's choosing, or redirect elsewhere.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from api.database import Database
from tests.support.ports import free_port


@dataclass
class Received:
    """One verified request: its headers, its body and the body parsed."""

    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def type(self) -> str:
        return str(self.payload["type"])


@dataclass
class Receiver:
    """Receives webhooks at `url` and verifies them with `secrets` (any one may sign)."""

    secrets: list[str]
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    status: int = 200  # what it answers a verified request
    redirect_to: str | None = None  # answer 301 to this instead
    delay_seconds: float = 0.0  # wait this long before answering
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why a request did not verify
    hits: int = 0  # every request, verified or not
    in_flight: int = 0  # requests being answered now
    most_in_flight: int = 0  # the most at once
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/onair?token=t0ken"

    async def start(self) -> None:
        """Listen (again, on the same port)."""
        app = web.Application()
        app.router.add_post("/hooks/onair", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        self._runner = runner

    async def stop(self) -> None:
        """Close the port: from now on connections are refused."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        headers = dict(request.headers)
        if self.redirect_to is not None:
            raise web.HTTPMovedPermanently(self.redirect_to)
        try:
            verified = [verify(secret, body, headers) for secret in self.secrets]
        except WebhookVerificationError as exc:  # a malformed header: no secret verifies
            self.rejected.append(str(exc))
            return web.Response(status=400, text=str(exc))
        if not any(verified):
            self.rejected.append("no matching signature")
            return web.Response(status=400, text="no matching signature")
        lowered = {k.lower(): v for k, v in headers.items()}
        self.received.append(Received(lowered, body, json.loads(body)))
        return web.Response(status=self.status, text="ok")

    def unique(self) -> list[Received]:
        """What was received, each webhook-id once (a receiver dedupes by it), in order."""
        seen: set[str] = set()
        found = []
        for item in self.received:
            if item.webhook_id not in seen:
                seen.add(item.webhook_id)
                found.append(item)
        return found

    def types(self) -> list[str]:
        return [item.type for item in self.unique()]

    async def wait_for(self, count: int, within: float = 30.0) -> list[Received]:
        """The first `count` distinct events, once they are here."""
        deadline = asyncio.get_running_loop().time() + within
        while len(self.unique()) < count:
            assert asyncio.get_running_loop().time() < deadline, (self.types(), self.rejected)
            await asyncio.sleep(0.05)
        return self.unique()


def verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether `secret` signed this request (`standardwebhooks`: signature and timestamp
    tolerance); raises on headers that are missing or malformed."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError as exc:
        if "signature" in str(exc).lower():
            return False
        raise
    return True


def project_secret(db_path: Path | str, project_id: str) -> str:
    """The project's current webhook secret, read from its store."""
    database = Database(db_path)
    try:
        project = database.get_project(project_id)
    finally:
        database.close()
    assert project is not None and project["webhook_secret"], project_id
    return str(project["webhook_secret"])
