"""This host among the encoding hosts that share one store: its registration, its
heartbeat, and the leases on the jobs whose pipelines it runs.

- **Registration.** At start a host registers under its name (`ONAIR_HOST_NAME`,
  default `hostname:httpPort`) and gets its `encoder_id` from the store: the one its
  name had before if that registration is dead, else the next free number.
  `ONAIR_ENCODER_ID` asks for a given id; a live host holding it (or a live host of the
  same name) makes the start fail (`HostRefused`). Leases the host's previous life
  held are released: it runs nothing yet.
- **Heartbeat.** Every `HEARTBEAT_SECONDS` the host writes the time and the units of
  lives it runs, and renews every lease it holds. A host is dead once it has not beaten
  for `DEAD_AFTER_SECONDS`; its leases expire at the same time (each renewal holds a
  lease that long), so another host may take its jobs.
- **Leases.** A pipeline starts only under the job's lease, taken in one conditional
  UPDATE of the job's row: free (never taken, released, or expired) or already this
  host's. Each take gives a new `lockKey` and a fencing token one above the last: of
  two hosts taking one job at once exactly one wins, and the other refuses its
  publisher ("publishing on encoder N", `LeaseHeld`). A lease that a renewal finds
  taken by another host (this host stalled past its expiry) is lost: `on_lost` is
  told, and the pipeline must stop writing.
- **Relays.** A host registers where the others relay inputs to it (`relay_url`, its
  RTMP listener) and a secret made at registration: a relay of a job's input presents
  `relay_token(secret, ...)`, which only hosts reading the store can make
  (`api.input_relay`).

Times are the hosts' own clocks (UTC, NTP-synchronised as any cluster's are), written
as the store writes every date-time (`utc_at`: they compare as text).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from media.clock import SYSTEM_CLOCK, Clock

from .database import Database
from .database.schema import hosts, live_jobs
from .database.store import utc_at
from .errors import LeaseHeld
from .settings import Settings

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
DEAD_AFTER_SECONDS = 20.0  # without a heartbeat: the host is dead, its leases expired
UP, DRAINING, STOPPED = "up", "draining", "stopped"
REGISTER_ATTEMPTS = 5  # two hosts taking the same next number at once: one tries again


class HostRefused(RuntimeError):
    """This host may not start: another live host has its encoder id or its name."""


@dataclass(frozen=True)
class Lease:
    """A job's lease, held by this host."""

    job_id: int
    encoder_id: int
    key: str  # the outputs' lockKey
    token: int  # the fencing token: above every earlier lease's of the job
    # The host it was taken from while that host's lease was still unreleased (its
    # lease expired: the host died or stalled), None after a clean release.
    taken_over_from: int | None = None


@dataclass(frozen=True)
class RelayTarget:
    """Where another host takes the inputs relayed to it (see the module)."""

    encoder_id: int
    url: str  # rtmp://host:port, no application
    proxy_protocol: bool  # its listener expects a PROXY protocol header first
    secret: str = field(repr=False)


def relay_token(secret: str, job_id: int, input_name: str, stream_key: str) -> str:
    """What a relay of `input_name` of the job presents to the host of `secret`."""
    message = f"{job_id}\n{input_name}\n{stream_key}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def default_host_name(settings: Settings) -> str:
    return f"{socket.gethostname()}:{settings.http_port}"


def default_internal_url(settings: Settings) -> str:
    """This host's API as the others reach it: its listening address when it is one
    (127.0.0.1: one machine), else its host name."""
    host = settings.http_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{settings.http_port}"


def relay_url(settings: Settings, internal_url: str) -> str:
    """This host's RTMP listener as the others reach it: the host of its internal URL,
    its RTMP port."""
    host = urlsplit(internal_url).hostname or socket.gethostname()
    host = f"[{host}]" if ":" in host else host
    return f"rtmp://{host}:{settings.rtmp_port}"


def onair_version() -> str:
    try:
        return metadata.version("onair")
    except metadata.PackageNotFoundError:
        return "unknown"


def _this_lease(job_id: int, encoder_id: int, token: int) -> Any:
    """The job's row while its lease is still this one (this host's, this token)."""
    j = live_jobs
    return and_(j.c.id == job_id, j.c.lease_token == token, j.c.lease_encoder_id == encoder_id)


class HostStore:
    """The hosts' rows and the jobs' lease columns: blocking, on the store's thread."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def register(
        self,
        name: str,
        address: str,
        capacity_units: float,
        version: str,
        wanted_id: int | None,
        now: str,
        dead_before: str,
        *,
        name_given: bool = True,
        relay: dict[str, Any] | None = None,
    ) -> tuple[int, str]:
        """This host's encoder id and name (see the module's docstring); HostRefused if
        a live host holds the wanted id, or the name when it was given (a default name
        a live host has is made this host's own: `name#id`). `relay`: the row's
        `relay_url`, `relay_proxy` and `relay_secret`."""
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                return self._db.transaction(
                    lambda connection: self._register(
                        connection,
                        name,
                        address,
                        capacity_units,
                        version,
                        wanted_id,
                        now,
                        dead_before,
                        name_given,
                        relay or {},
                    )
                )
            except IntegrityError:
                if attempt == REGISTER_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _register(
        self,
        connection: Connection,
        name: str,
        address: str,
        capacity_units: float,
        version: str,
        wanted_id: int | None,
        now: str,
        dead_before: str,
        name_given: bool,
        relay: dict[str, Any],
    ) -> tuple[int, str]:
        h = hosts
        alive = and_(h.c.heartbeat_at > dead_before, h.c.state != STOPPED)

        def live_host(*where: Any) -> dict[str, Any] | None:
            row = connection.execute(select(h).where(*where, alive)).mappings().first()
            return dict(row) if row is not None else None

        named = live_host(h.c.name == name)
        if named is not None and name_given:
            raise HostRefused(
                f"a live host is registered as {name!r} (encoder {named['encoder_id']}):"
                " set ONAIR_HOST_NAME to a name of its own"
            )
        reuse = named is None  # a dead registration of the name: its id again
        if wanted_id is not None:
            holder = live_host(h.c.encoder_id == wanted_id)
            if holder is not None:
                raise HostRefused(
                    f"ONAIR_ENCODER_ID={wanted_id} is taken by the live host {holder['name']!r}"
                )
            encoder_id = wanted_id
        else:
            previous = None
            if reuse:
                previous = connection.execute(
                    select(h.c.encoder_id).where(h.c.name == name)
                ).scalar()
            if previous is not None:
                encoder_id = int(previous)
            else:
                highest = connection.execute(select(func.max(h.c.encoder_id))).scalar_one()
                encoder_id = int(highest or 0) + 1
        if not reuse:
            name = f"{name}#{encoder_id}"
        connection.execute(h.delete().where(or_(h.c.encoder_id == encoder_id, h.c.name == name)))
        connection.execute(
            h.insert().values(
                encoder_id=encoder_id,
                name=name,
                address=address,
                capacity_units=capacity_units,
                used_units=0.0,
                version=version,
                state=UP,
                started_at=now,
                heartbeat_at=now,
                **relay,
            )
        )
        # What this id held before its restart is nobody's now.
        connection.execute(
            update(live_jobs)
            .where(
                live_jobs.c.lease_encoder_id == encoder_id,
                live_jobs.c.lease_expires_at.is_not(None),
            )
            .values(lease_expires_at=None)
        )
        return encoder_id, name

    def beat(
        self,
        encoder_id: int,
        name: str,
        state: str,
        used_units: float,
        now: str,
        until: str,
        leases: Sequence[tuple[int, int]],
    ) -> list[int]:
        """Write this host's heartbeat and renew its leases (job id, token) until
        `until`; returns the jobs whose lease is no longer this host's."""

        def work(connection: Connection) -> list[int]:
            connection.execute(
                update(hosts)
                .where(hosts.c.encoder_id == encoder_id, hosts.c.name == name)
                .values(heartbeat_at=now, used_units=used_units, state=state)
            )
            lost = []
            for job_id, token in leases:
                renewed = connection.execute(
                    update(live_jobs)
                    .where(_this_lease(job_id, encoder_id, token))
                    .values(lease_expires_at=until)
                ).rowcount
                if renewed != 1:
                    lost.append(job_id)
            return lost

        return self._db.transaction(work)

    def take_lease(self, job_id: int, encoder_id: int, now: str, until: str) -> Lease | int:
        """The job's new lease for this host, or the encoder id of the live host that
        holds it."""
        j = live_jobs
        free = or_(
            j.c.lease_expires_at.is_(None),
            j.c.lease_expires_at <= now,
            j.c.lease_encoder_id == encoder_id,
        )
        key = str(uuid.uuid4())

        def work(connection: Connection) -> Lease | int:
            before = (
                connection.execute(
                    select(j.c.lease_encoder_id, j.c.lease_expires_at).where(j.c.id == job_id)
                )
                .mappings()
                .first()
            )
            taken = connection.execute(
                update(j)
                .where(j.c.id == job_id, free)
                .values(
                    lease_encoder_id=encoder_id,
                    lease_key=key,
                    lease_token=j.c.lease_token + 1,
                    lease_expires_at=until,
                )
            ).rowcount
            row = (
                connection.execute(
                    select(j.c.lease_encoder_id, j.c.lease_token).where(j.c.id == job_id)
                )
                .mappings()
                .first()
            )
            if row is None:
                raise LookupError(f"no job {job_id}")
            if taken != 1:
                return int(row["lease_encoder_id"])
            previous = before["lease_encoder_id"] if before is not None else None
            unreleased = before is not None and before["lease_expires_at"] is not None
            taken_from = (
                int(previous)
                if previous is not None and previous != encoder_id and unreleased
                else None
            )
            return Lease(job_id, encoder_id, key, int(row["lease_token"]), taken_from)

        return self._db.transaction(work)

    def release_lease(self, job_id: int, encoder_id: int, token: int) -> bool:
        """The lease is free at once (if it is still this one); the holder stays named."""

        def work(connection: Connection) -> bool:
            return (
                connection.execute(
                    update(live_jobs)
                    .where(_this_lease(job_id, encoder_id, token))
                    .values(lease_expires_at=None)
                ).rowcount
                == 1
            )

        return self._db.transaction(work)

    def lease_holder(self, job_id: int, now: str) -> int | None:
        """The encoder id holding the job's lease now (None: nobody)."""
        j = live_jobs
        with self._db.engine.connect() as connection:
            holder = connection.execute(
                select(j.c.lease_encoder_id).where(
                    j.c.id == job_id, j.c.lease_expires_at.is_not(None), j.c.lease_expires_at > now
                )
            ).scalar()
        return int(holder) if holder is not None else None

    def offline_of(self, job_ids: Sequence[int]) -> list[int]:
        """Which of these jobs are offline now (the toggle, on whichever host)."""
        if not job_ids:
            return []
        j = live_jobs
        with self._db.engine.connect() as connection:
            rows = connection.execute(select(j.c.id).where(j.c.id.in_(job_ids), j.c.online == 0))
            return [int(job_id) for job_id in rows.scalars()]

    def holds(self, job_id: int, encoder_id: int, token: int) -> bool:
        """Whether the job's lease is still this one (expired or not: nobody took it)."""
        j = live_jobs
        with self._db.engine.connect() as connection:
            found = connection.execute(
                select(func.count())
                .select_from(j)
                .where(
                    j.c.id == job_id, j.c.lease_encoder_id == encoder_id, j.c.lease_token == token
                )
            ).scalar_one()
        return bool(found)

    def alive(self, encoder_id: int, dead_before: str) -> bool:
        h = hosts
        with self._db.engine.connect() as connection:
            found = connection.execute(
                select(func.count())
                .select_from(h)
                .where(
                    h.c.encoder_id == encoder_id,
                    h.c.heartbeat_at > dead_before,
                    h.c.state != STOPPED,
                )
            ).scalar_one()
        return bool(found)

    def address_of(self, encoder_id: int) -> str | None:
        with self._db.engine.connect() as connection:
            found = connection.execute(
                select(hosts.c.address).where(hosts.c.encoder_id == encoder_id)
            ).scalar()
        return str(found) if found is not None else None

    def relay_target(self, encoder_id: int, dead_before: str) -> RelayTarget | None:
        """Where the live host of `encoder_id` takes relayed inputs (None: it is dead,
        or takes none)."""
        h = hosts
        with self._db.engine.connect() as connection:
            row = (
                connection.execute(
                    select(h.c.relay_url, h.c.relay_proxy, h.c.relay_secret).where(
                        h.c.encoder_id == encoder_id,
                        h.c.heartbeat_at > dead_before,
                        h.c.state != STOPPED,
                    )
                )
                .mappings()
                .first()
            )
        if row is None or not row["relay_url"] or not row["relay_secret"]:
            return None
        return RelayTarget(
            encoder_id, row["relay_url"], bool(row["relay_proxy"]), row["relay_secret"]
        )

    def hosts(self) -> list[dict[str, Any]]:
        with self._db.engine.connect() as connection:
            rows = connection.execute(select(hosts).order_by(hosts.c.encoder_id))
            return [dict(row._mapping) for row in rows]


class Hosts:
    """This host's registration, heartbeat and leases (one per app)."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        dead_after_seconds: float = DEAD_AFTER_SECONDS,
    ) -> None:
        self._db = database
        self._store = HostStore(database)
        self._settings = settings
        self._clock = clock
        self._heartbeat_seconds = heartbeat_seconds
        self._dead_after_seconds = dead_after_seconds
        self.name = settings.host_name or default_host_name(settings)
        self._encoder_id: int | None = None
        self._held: dict[int, Lease] = {}
        self._state = UP
        self._beating: asyncio.Task[None] | None = None
        self._relay_secret = secrets.token_urlsafe(32)  # new at each start
        # What this host runs, in capacity units (set by the jobs' owner).
        self.used_units: Callable[[], float] = lambda: 0.0
        # A lease found taken by another host: (job id, that host's encoder id or None).
        self.on_lost: Callable[[int, int | None], None] | None = None

    @property
    def encoder_id(self) -> int:
        if self._encoder_id is None:
            raise RuntimeError("the host is not registered")
        return self._encoder_id

    @property
    def store(self) -> HostStore:
        return self._store

    def _now(self, ahead: float = 0.0) -> str:
        return utc_at(self._clock.unix() + ahead)

    async def register(self, capacity_units: float, *, wait: bool = True) -> int:
        """Register. A live host holding the id or the name may be this host's previous
        life, killed a moment ago (a pod restarted): the registration waits for it to be
        dead (`DEAD_AFTER_SECONDS`, a little more), then HostRefused if it still beats."""
        settings = self._settings
        address = settings.internal_url or default_internal_url(settings)
        deadline = self._clock.monotonic() + self._dead_after_seconds + 5
        while True:
            try:
                encoder_id, name = await self._db.call(
                    partial(
                        self._store.register,
                        self.name,
                        address,
                        capacity_units,
                        onair_version(),
                        settings.encoder_id,
                        self._now(),
                        self._now(-self._dead_after_seconds),
                        name_given=settings.host_name is not None,
                        relay={
                            "relay_url": relay_url(settings, address),
                            "relay_proxy": int(settings.proxy_protocol),
                            "relay_secret": self._relay_secret,
                        },
                    )
                )
                break
            except HostRefused as refused:
                if not wait or self._clock.monotonic() >= deadline:
                    raise
                logger.warning("%s; waiting for it to stop beating", refused)
                await asyncio.sleep(1.0)
        self.name = name
        self._encoder_id = encoder_id
        logger.info("host %r registered as encoder %d", self.name, encoder_id)
        return encoder_id

    async def start(self) -> None:
        self._beating = asyncio.create_task(self._beat_forever())

    async def stop(self) -> None:
        """No more heartbeats; the host is marked stopped (its leases were released by
        its pipelines' ends; any left expire)."""
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
            self._beating = None
        if self._encoder_id is not None:
            self._state = STOPPED
            with contextlib.suppress(Exception):
                await self.beat()

    def drain(self) -> None:
        """Admit nothing more (the heartbeat says so)."""
        self._state = DRAINING

    async def acquire(self, job_id: int) -> Lease:
        """The job's lease for this host, or LeaseHeld naming the host that has it."""
        got = await self._db.call(
            self._store.take_lease,
            job_id,
            self.encoder_id,
            self._now(),
            self._now(self._dead_after_seconds),
        )
        if not isinstance(got, Lease):
            raise LeaseHeld(
                f"this stream key is publishing on encoder {got}",
                f"the job's lease is held by encoder {got} (a live host)",
                holder=got,
            )
        self._held[job_id] = got
        return got

    async def release(self, lease: Lease) -> None:
        """Let the job go (its pipeline ended here): the next host may take it at once."""
        if self._held.get(lease.job_id) == lease:
            del self._held[lease.job_id]
        await self._db.call(self._store.release_lease, lease.job_id, lease.encoder_id, lease.token)

    def holds(self, job_id: int) -> Lease | None:
        return self._held.get(job_id)

    def forget(self, job_id: int) -> bool:
        """The job's lease is lost (found so by a write): no longer renewed here. False
        if it was not held (the heartbeat found it first)."""
        return self._held.pop(job_id, None) is not None

    def still_holds(self, lease: Lease) -> bool:
        """Blocking (an upload worker's thread): whether `lease` is still the job's."""
        return self._store.holds(lease.job_id, lease.encoder_id, lease.token)

    async def relay_target(self, encoder_id: int) -> RelayTarget | None:
        """Where the live host of `encoder_id` takes the inputs relayed to it."""
        return await self._db.call(
            self._store.relay_target, encoder_id, self._now(-self._dead_after_seconds)
        )

    def relay_accepted(self, job_id: int, input_name: str, stream_key: str, token: str) -> bool:
        """Whether a relay's token is one a host reading the store made for this host
        (constant time)."""
        wanted = relay_token(self._relay_secret, job_id, input_name, stream_key)
        return hmac.compare_digest(wanted.encode(), token.encode())

    async def holder(self, job_id: int) -> int | None:
        """The encoder id that holds the job's lease now (None: nobody)."""
        return await self._db.call(self._store.lease_holder, job_id, self._now())

    async def wait_released(self, job_id: int, seconds: float) -> bool:
        """Wait (polling the store) until nobody holds the job's lease; False at the end
        of `seconds` if somebody still does."""
        deadline = asyncio.get_running_loop().time() + seconds
        while await self.holder(job_id) is not None:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.25)
        return True

    async def alive(self, encoder_id: int) -> bool:
        """Whether the host of `encoder_id` beats (another host's view of it)."""
        return await self._db.call(
            self._store.alive, encoder_id, self._now(-self._dead_after_seconds)
        )

    async def runs_elsewhere(self, job_id: int) -> str | None:
        """The API address of the other live host running the job (None: here, or
        nowhere)."""
        holder = await self.holder(job_id)
        if holder is None or holder == self.encoder_id:
            return None
        return await self._db.call(self._store.address_of, holder)

    async def offline_of(self, job_ids: Sequence[int]) -> list[int]:
        return await self._db.call(self._store.offline_of, list(job_ids))

    async def beat(self) -> None:
        """One heartbeat: the host's row and every lease it holds renewed."""
        held = list(self._held.values())
        lost = await self._db.call(
            self._store.beat,
            self.encoder_id,
            self.name,
            self._state,
            float(self.used_units()),
            self._now(),
            self._now(self._dead_after_seconds),
            [(lease.job_id, lease.token) for lease in held],
        )
        for job_id in lost:
            lease = self._held.pop(job_id, None)
            if lease is None:
                continue
            holder = await self._db.call(self._store.lease_holder, job_id, self._now())
            logger.warning(
                "[job %d] lease lost: encoder %s holds it now", job_id, holder or "(none)"
            )
            if self.on_lost is not None:
                self.on_lost(job_id, holder)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                await self.beat()
            except Exception:
                logger.exception("heartbeat failed (the store?): tried again")
