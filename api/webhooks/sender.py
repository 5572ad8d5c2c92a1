"""`WebhookSender`: the one background task of a host that delivers webhook events.

It polls the store for due deliveries (`Database.claim_webhook_deliveries`: per job only
the oldest pending one, held under a lease so that hosts sharing a PostgreSQL never send
one at once) and POSTs each through the outbound guard, at most `max_in_flight` at a
time. Each attempt is signed afresh (its own `webhook-timestamp`), has 5 s in all, and
is recorded with its outcome; a non-2xx answer, a timeout, a failed connection or a
refused address is tried again with exponential backoff and full jitter until the event
is `retry_hours` old, then given up, which unblocks the job's next event.

Redirects are not followed: a POST answered 301 or 302 would become a GET without its
body, and a receiver is to answer 2xx at the URL it gave. A 3xx is a failed attempt
("redirect ... not followed"); the guard checks the one address each attempt connects to.

Nothing here is on a live's path: events are queued by a row insert in the transaction
that records them, and sending runs here, on the event loop, the store on its thread.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from media.clock import SYSTEM_CLOCK, Clock
from media.outbound import (
    HTTP_SCHEMES,
    OutboundError,
    OutboundPolicy,
    OutboundRefused,
    check_url,
    create_session,
    origin,
    read_limited,
)

from ..database import Database
from ..database.store import unix_of, utc_at
from .schedule import next_attempt_unix
from .signing import signed_headers

logger = logging.getLogger(__name__)

ATTEMPT_TIMEOUT_SECONDS = 5.0  # connect, send and read the answer, in all
RESPONSE_LIMIT_BYTES = 64 * 1024  # what is read of an answer (then dropped)
MAX_IN_FLIGHT = 16  # sends at once, per host
LEASE_SECONDS = 60.0  # a claimed delivery's hold: far longer than one attempt
POLL_SECONDS = 0.5
PENDING_REFRESH_SECONDS = 5.0  # the pending gauge's query, at most this often
PRUNE_EVERY_SECONDS = 3600.0
KEEP_FINISHED_SECONDS = 7 * 86400.0  # delivered and given-up deliveries are kept a week
STOP_WAIT_SECONDS = 2.0  # sends in flight at stop get this long, then are cancelled
OUTCOMES = ("delivered", "failed", "refused", "timeout")


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to."""

    outcome: str  # one of OUTCOMES
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookSender:
    """Delivers the store's webhook queue from this host; `start()` / `stop()` with the app."""

    def __init__(
        self,
        database: Database,
        policy: OutboundPolicy,
        registry: CollectorRegistry,
        *,
        retry_initial_seconds: float = 5.0,
        retry_hours: float = 24.0,
        clock: Clock = SYSTEM_CLOCK,
        max_in_flight: int = MAX_IN_FLIGHT,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._db = database
        # One attempt has ATTEMPT_TIMEOUT_SECONDS in all (the guard's own timeouts within).
        self._policy = replace(
            policy,
            total_timeout_seconds=ATTEMPT_TIMEOUT_SECONDS,
            connect_timeout_seconds=min(policy.connect_timeout_seconds, ATTEMPT_TIMEOUT_SECONDS),
            read_timeout_seconds=min(policy.read_timeout_seconds, ATTEMPT_TIMEOUT_SECONDS),
        )
        self._retry_initial_seconds = retry_initial_seconds
        self._retry_seconds = retry_hours * 3600.0
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._poll_seconds = poll_seconds
        self._claimer = f"sender-{secrets.token_hex(8)}"  # this process, this start
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._pending = 0
        self._pending_at = float("-inf")
        self._pruned_at = float("-inf")
        self._attempts = Counter(
            "onair_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered: a 2xx; refused: by the"
            " outbound guard; timeout: no answer within 5 s; failed: anything else)",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:  # from 0: rate() sees the first
            self._attempts.labels(outcome)
        self._given_up = Counter(
            "onair_webhook_deliveries_given_up",
            "Webhook deliveries given up (still failing when their event was"
            " ONAIR_WEBHOOK_RETRY_HOURS old)",
            registry=registry,
        )
        Gauge(
            "onair_webhook_deliveries_pending",
            "Webhook deliveries not delivered yet and not given up (every host's)",
            registry=registry,
        ).set_function(lambda: self._pending)

    async def start(self) -> None:
        """Start delivering (idempotent)."""
        if self._task is None:
            self._session = create_session(self._policy)
            self._task = asyncio.create_task(self.run(), name="webhook-sender")

    async def stop(self) -> None:
        """Stop claiming; sends in flight get STOP_WAIT_SECONDS, then are cancelled, and
        what this host held is released (due again at once, here or on another host)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=STOP_WAIT_SECONDS)
            for send in set(self._sends):
                send.cancel()
            await asyncio.gather(*self._sends, return_exceptions=True)
        try:
            await self._db.call(self._db.release_webhook_claims, self._claimer)
        except Exception:  # the store may be down: the holds run out on their own
            logger.exception("[webhooks] could not release held deliveries")
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def run(self) -> None:
        """Poll, claim and send until cancelled; one catch-all that logs and goes on."""
        logger.info("[webhooks] sender started (%s)", self._claimer)
        try:
            while True:
                try:
                    await self._tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("[webhooks] sender round failed; trying again")
                await asyncio.sleep(self._poll_seconds)
        finally:
            logger.info("[webhooks] sender stopped")

    async def _tick(self) -> None:
        db, now = self._db, self._clock.unix()
        if now - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = now
            pruned = await db.call(db.prune_webhook_deliveries, utc_at(now - KEEP_FINISHED_SECONDS))
            if pruned:
                logger.info("[webhooks] pruned %d finished deliveries", pruned)
        room = self._max_in_flight - len(self._sends)
        if room > 0:
            claimed = await db.call(
                db.claim_webhook_deliveries,
                utc_at(now),
                utc_at(now + LEASE_SECONDS),
                self._claimer,
                room,
            )
            for delivery in claimed:
                send = asyncio.create_task(self._deliver(delivery))
                self._sends.add(send)
                send.add_done_callback(self._sends.discard)
        if now - self._pending_at >= PENDING_REFRESH_SECONDS:
            self._pending_at = now
            self._pending = await db.call(db.pending_webhook_count)

    async def _deliver(self, delivery: Mapping[str, Any]) -> None:
        """One attempt at `delivery` and its record."""
        where = f"[webhook {delivery['webhook_id']} job {delivery['live_job_id']}]"
        try:
            started = self._clock.unix()
            attempt = await self.attempt(delivery, started)
            self._attempts.labels(attempt.outcome).inc()
            delivered = attempt.outcome == "delivered"
            next_at = None
            if not delivered:
                next_at = next_attempt_unix(
                    int(delivery["attempts"]) + 1,
                    self._clock.unix(),
                    unix_of(delivery["created_at"]),
                    initial_seconds=self._retry_initial_seconds,
                    retry_seconds=self._retry_seconds,
                )
            record = {
                "attempted_at": utc_at(started),
                "status_code": attempt.status_code,
                "error": attempt.error,
                "duration_ms": attempt.duration_ms,
            }
            await self._db.call(
                lambda: self._db.finish_webhook_attempt(
                    int(delivery["id"]),
                    self._claimer,
                    record,
                    delivered=delivered,
                    next_attempt_at=None if next_at is None else utc_at(next_at),
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s attempt not recorded (tried again when its hold ends)", where)
            return
        if delivered:
            logger.debug("%s %s delivered (HTTP %s)", where, delivery["type"], attempt.status_code)
        elif next_at is None:
            self._given_up.inc()
            logger.warning("%s %s given up: %s", where, delivery["type"], attempt.error)
        else:
            logger.info(
                "%s %s attempt %d failed (%s); next in %.1f s",
                where,
                delivery["type"],
                int(delivery["attempts"]) + 1,
                attempt.error,
                next_at - self._clock.unix(),
            )

    async def attempt(self, delivery: Mapping[str, Any], now_unix: float) -> Attempt:
        """POST the delivery's body to its URL once, signed at `now_unix`."""
        begun = time.monotonic()

        def took() -> int:
            return round((time.monotonic() - begun) * 1000)

        body: str = delivery["body"]
        if not delivery["secrets"]:
            return Attempt("failed", None, "the project has no webhook secret", 0)
        headers = signed_headers(delivery["secrets"], delivery["webhook_id"], int(now_unix), body)
        try:
            url = check_url(delivery["url"], HTTP_SCHEMES)
        except OutboundRefused as exc:
            return Attempt("refused", None, str(exc), took())
        where = origin(url)
        if self._session is None:
            raise RuntimeError("WebhookSender used before start()")
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_SECONDS):
                async with self._session.post(
                    url, data=body.encode(), headers=headers, allow_redirects=False
                ) as response:
                    await read_limited(response, RESPONSE_LIMIT_BYTES)
                    status, location = response.status, response.headers.get("Location")
        except OutboundRefused as exc:
            return Attempt("refused", None, str(exc.at(where)), took())
        except OutboundError as exc:  # a response over the limit: the receiver answered
            return Attempt("failed", None, str(exc.at(where)), took())
        except TimeoutError:
            seconds = f"{ATTEMPT_TIMEOUT_SECONDS:g}"
            return Attempt("timeout", None, f"{where}: no answer within {seconds} s", took())
        except aiohttp.ClientError as exc:
            return Attempt("failed", None, f"{where}: {_failure(exc)}", took())
        if 200 <= status < 300:
            return Attempt("delivered", status, None, took())
        return Attempt("failed", status, _status_error(where, status, location), took())


def _status_error(where: str, status: int, location: str | None) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "non-standard status"
    if 300 <= status < 400 and location is not None:
        try:
            target = origin(check_url(location, HTTP_SCHEMES))
        except OutboundRefused:
            target = "an unusable URL"
        except ValueError:
            target = "a relative URL"
        return f"{where}: HTTP {status} {phrase}: redirect to {target} not followed"
    return f"{where}: HTTP {status} {phrase}"


def _failure(exc: aiohttp.ClientError) -> str:
    """What went wrong, in words that never repeat the URL (its path may hold a token)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "connection closed before the answer"
    return f"request failed ({type(exc).__name__})"
