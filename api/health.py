"""/healthz: the database and the storage answer, each checked at most once at a time
and its result shared (a flood of /healthz costs either nothing more)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from .database import Database
from .present import envelope

logger = logging.getLogger(__name__)

StoragePing = Callable[[], bool]
# A check's result is reused this long, and one check runs at a time.
HEALTH_CACHE_SECONDS = 2.0
HEALTH_CHECK_TIMEOUT_SECONDS = 5.0  # slower: reported as not answering (the check goes on)


class SharedCheck:
    """A health check that runs once at a time; its result is reused for `max_age_seconds`.

    However many requests ask, at most one check is in flight and at most one starts per
    `max_age_seconds`: a /healthz flood costs the database and the storage nothing more.
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[bool]],
        *,
        max_age_seconds: float = HEALTH_CACHE_SECONDS,
        timeout_seconds: float = HEALTH_CHECK_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self.max_age_seconds = max_age_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._ok = False
        self._checked_at: float | None = None
        self._running: asyncio.Task[bool] | None = None
        self.runs = 0  # checks started

    async def result(self) -> bool:
        """The last result if fresh, else the one of the check in flight (started if none)."""
        if self._checked_at is not None and self._clock() - self._checked_at < self.max_age_seconds:
            return self._ok
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await asyncio.shield(self._running)
        except TimeoutError:
            return False

    async def _run(self) -> bool:
        self.runs += 1
        try:
            ok = bool(await self._check())
        except Exception:
            logger.exception("health check failed")
            ok = False
        finally:
            self._running = None
        self._ok, self._checked_at = ok, self._clock()
        return ok

    async def close(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


class HealthChecks:
    """What /healthz asks: the database (on its own thread) and the storage, each shared.

    The storage ping runs on a thread of its own, never on the default executor that
    admission uses (`asyncio.to_thread`) nor on the database's: a slow S3 cannot delay
    a publisher's admission, and a /healthz flood queues nothing anywhere.
    """

    def __init__(
        self, database: Callable[[], Database], storage_ping: StoragePing, **options: Any
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healthz")
        self.database = SharedCheck(lambda: database().call(database().ping), **options)
        self.storage = SharedCheck(self._ping_storage, **options)
        self._storage_ping = storage_ping

    async def _ping_storage(self) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._storage_ping)

    async def close(self) -> None:
        await self.database.close()
        await self.storage.close()
        # A ping still running finishes on its own (botocore's timeouts bound it).
        self._executor.shutdown(wait=False, cancel_futures=True)


HEALTH_KEY = web.AppKey("health", HealthChecks)


async def healthz(request: web.Request) -> web.Response:
    health = request.app[HEALTH_KEY]
    database_ok, storage_ok = await asyncio.gather(
        health.database.result(), health.storage.result()
    )
    checks = {"store": database_ok, "storage": storage_ok}
    status = 200 if all(checks.values()) else 503
    errors = [f"{name} does not answer" for name, ok in checks.items() if not ok]
    return envelope(checks, status=status, errors=errors)
