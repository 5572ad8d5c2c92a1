"""Hosts sharing one store (`api.hosts`): registration and encoder ids, heartbeats, and
the jobs' leases with their fencing tokens, on SQLite and on a real PostgreSQL (where
two hosts, each with its own connections, race for one job)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.database import Database
from api.database.store import utc_at
from api.errors import LeaseHeld
from api.hosts import HostRefused, Hosts, HostStore, Lease, relay_token
from api.settings import Settings
from packager.s3server import EmbeddedS3
from tests.support.clocks import FakeClock
from tests.support.legacy_store import job_row
from tests.support.service import make_projects, make_settings, start_api

NOW, LATER = "2026-12-02T10:00:00.000Z", "2026-12-02T10:00:20.000Z"
DEAD_BEFORE = "2026-12-02T09:59:40.000Z"
PATHS = itertools.count()


@pytest.fixture
def store(store_target: str | Path) -> Iterator[Database]:
    database = Database(store_target)
    yield database
    database.close()


def register(hosts: HostStore, name: str, wanted: int | None = None, now: str = NOW) -> int:
    encoder_id, _ = hosts.register(name, f"http://{name}", 2.0, "test", wanted, now, DEAD_BEFORE)
    return encoder_id


def test_hosts_get_ids_from_the_store_and_a_restarted_one_gets_its_own_back(
    store: Database,
) -> None:
    hosts = HostStore(store)
    assert [register(hosts, "a:8080"), register(hosts, "b:8080")] == [1, 2]
    with pytest.raises(HostRefused, match="a live host is registered as 'a:8080'"):
        register(hosts, "a:8080")  # its heartbeat is fresh: a second process of that name
    # a default name (not ONAIR_HOST_NAME) a live host has: this host's own, a new id
    assert hosts.register("a:8080", "", 2.0, "t", None, NOW, DEAD_BEFORE, name_given=False) == (
        3,
        "a:8080#3",
    )
    later = "2026-12-02T10:01:00.000Z"  # a's last beat is a minute old: it is dead
    assert hosts.register("a:8080", "http://a", 2.0, "test", None, later, NOW) == (1, "a:8080")
    assert register(hosts, "c:8080", now=later) == 4


def test_a_wanted_encoder_id_is_refused_while_a_live_host_has_it(store: Database) -> None:
    hosts = HostStore(store)
    assert register(hosts, "a", wanted=7) == 7
    with pytest.raises(HostRefused, match="ONAIR_ENCODER_ID=7 is taken by the live host 'a'"):
        register(hosts, "b", wanted=7)
    assert register(hosts, "b") == 8
    # once a is dead, its id may be asked for
    assert hosts.register("c", "", 2.0, "t", 7, "2026-12-02T10:01:00.000Z", NOW) == (7, "c")


def a_job(database: Database) -> int:
    if database.get_project("p1") is None:
        database.create_project("p1", "p1", "key-p1", b"\0" * 32)
    path = f"leased-{next(PATHS)}"
    return database.insert_job(job_row("p1", "media-p1", "shows", path), ["720p"])


def test_a_lease_is_one_hosts_until_released_or_expired_and_each_take_fences_the_last(
    store: Database,
) -> None:
    hosts = HostStore(store)
    one, two = register(hosts, "one"), register(hosts, "two")
    job = a_job(store)
    first = hosts.take_lease(job, one, NOW, LATER)
    assert isinstance(first, Lease) and first.token == 1 and first.taken_over_from is None
    assert hosts.take_lease(job, two, NOW, LATER) == one  # held: "publishing on encoder 1"
    assert hosts.lease_holder(job, NOW) == one
    assert hosts.release_lease(job, one, first.token)
    second = hosts.take_lease(job, two, NOW, LATER)  # released: a clean handover
    assert isinstance(second, Lease) and second.token == 2 and second.taken_over_from is None
    assert second.key != first.key
    assert not hosts.release_lease(job, one, first.token)  # a fenced token frees nothing
    # two stops beating: at its lease's expiry another host takes over
    third = hosts.take_lease(job, one, LATER, "2026-12-02T10:00:40.000Z")
    assert isinstance(third, Lease) and third.token == 3 and third.taken_over_from == two
    # two's renewal finds it lost
    assert hosts.beat(two, "two", "up", 1.0, LATER, LATER, [(job, second.token)]) == [job]
    assert hosts.beat(one, "one", "up", 1.0, LATER, LATER, [(job, third.token)]) == []


def test_a_restarted_host_holds_nothing_of_its_previous_life(store: Database) -> None:
    hosts = HostStore(store)
    one = register(hosts, "one")
    job = a_job(store)
    assert isinstance(hosts.take_lease(job, one, NOW, LATER), Lease)
    later = "2026-12-02T10:01:00.000Z"
    assert hosts.register("one", "http://one", 2.0, "test", None, later, NOW) == (one, "one")
    assert hosts.lease_holder(job, NOW) is None


def test_two_hosts_taking_one_job_at_the_same_instant_one_wins(postgres_url: str) -> None:
    """Two processes' worth of connections (two `Database`s), started together."""
    first, second = Database(postgres_url), Database(postgres_url)
    try:
        stores = [HostStore(first), HostStore(second)]
        ids = [register(stores[0], "one"), register(stores[1], "two")]

        def take(
            index: int, job: int, start: threading.Barrier, results: list[Lease | int]
        ) -> None:
            start.wait()
            results[index] = stores[index].take_lease(job, ids[index], NOW, LATER)

        for _ in range(20):
            job = a_job(first)
            results: list[Any] = [None, None]
            start = threading.Barrier(2)
            threads = [
                threading.Thread(target=take, args=(i, job, start, results)) for i in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            won = [r for r in results if isinstance(r, Lease)]
            assert len(won) == 1, results
            lost = next(r for r in results if not isinstance(r, Lease))
            assert lost == won[0].encoder_id  # the loser is told who has it
    finally:
        first.close()
        second.close()


async def test_the_heartbeat_renews_leases_and_a_lost_one_is_told(store: Database) -> None:
    clock = FakeClock()
    one = Hosts(store, Settings(host_name="one"), clock=clock)
    two = Hosts(store, Settings(host_name="two"), clock=clock)
    await one.register(2.0)
    await two.register(2.0)
    job = a_job(store)
    lease = await one.acquire(job)
    with pytest.raises(LeaseHeld, match=f"publishing on encoder {one.encoder_id}"):
        await two.acquire(job)
    clock.advance(15)
    await one.beat()  # renewed: 20 s from now
    clock.advance(15)
    with pytest.raises(LeaseHeld):
        await two.acquire(job)
    lost: list[tuple[int, int | None]] = []
    one.on_lost = lambda job_id, holder: lost.append((job_id, holder))
    clock.advance(30)  # one stalled: its lease expired
    taken = await two.acquire(job)
    assert taken.taken_over_from == one.encoder_id and taken.token == lease.token + 1
    await one.beat()
    assert lost == [(job, two.encoder_id)]
    assert one.holds(job) is None


async def test_a_host_restarted_at_once_waits_for_its_previous_life_to_be_dead(
    store: Database,
) -> None:
    """A pod killed and started again: its previous registration beats no more."""
    first = Hosts(store, Settings(host_name="pod-0"), dead_after_seconds=1.0)
    encoder_id = await first.register(2.0)
    again = Hosts(store, Settings(host_name="pod-0"), dead_after_seconds=1.0)
    started = time.monotonic()
    assert await again.register(2.0) == encoder_id  # its id back, once the old one died
    assert time.monotonic() - started >= 0.5
    duplicate = Hosts(store, Settings(host_name="pod-0"), dead_after_seconds=1.0)
    with pytest.raises(HostRefused):  # `again` is alive (it just registered)
        await duplicate.register(2.0, wait=False)


async def test_a_host_tells_the_others_where_to_relay_and_takes_only_their_tokens(
    store: Database,
) -> None:
    """Where a host takes relayed inputs (its RTMP listener, by its internal URL's host)
    and the token a relay presents: made from its secret in the store, bound to the job,
    the input and the key; another host's secret, or another input, is refused."""
    clock = FakeClock()
    one = Hosts(
        store,
        Settings(host_name="one", internal_url="http://10.0.0.5:8080", rtmp_port=1936),
        clock=clock,
    )
    two = Hosts(store, Settings(host_name="two", proxy_protocol=True), clock=clock)
    await one.register(2.0)
    await two.register(2.0)
    target = await two.relay_target(one.encoder_id)
    assert target is not None and (target.url, target.proxy_protocol) == (
        "rtmp://10.0.0.5:1936",
        False,
    )
    back = await one.relay_target(two.encoder_id)
    assert back is not None and back.proxy_protocol and back.secret != target.secret
    token = relay_token(target.secret, 7, "backup", "the-key")
    assert one.relay_accepted(7, "backup", "the-key", token)
    for job_id, input_name, key in (
        (8, "backup", "the-key"),
        (7, "primary", "the-key"),
        (7, "backup", "other-key"),
    ):
        assert not one.relay_accepted(job_id, input_name, key, token)
    assert not two.relay_accepted(7, "backup", "the-key", token)  # not two's secret
    assert not one.relay_accepted(7, "backup", "the-key", "")
    clock.advance(30)  # one stopped beating: nobody relays to it
    assert await two.relay_target(one.encoder_id) is None


async def test_a_restarted_host_names_what_it_spooled_for_a_live_taken_over_as_lost(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    """A host killed mid-live whose live another host took over: at its next start, the
    segments it had spooled but not uploaded cannot join the recording that went on
    elsewhere; they are named in a `SpoolLost` timing and the spool is freed."""
    settings = make_settings(tmp_path, s3_server)
    (project,) = make_projects(settings.db_path, 1)
    store = Database(settings.db_path)
    try:
        job = store.insert_job(job_row(project.id, "media-taken", "shows", "taken"), ["720p"])
        hosts = HostStore(store)
        now = time.time()
        other, _ = hosts.register("other", "http://other", 2.0, "t", None, utc_at(now), "")
        assert isinstance(hosts.take_lease(job, other, utc_at(now), utc_at(now + 60)), Lease)
    finally:
        store.close()
    folder = settings.spool_dir / str(job) / "720p"
    folder.mkdir(parents=True)
    for number in range(3):
        (folder / f"seg_{number:06d}.ts").write_bytes(b"\x47" * 188)
    server = await start_api(settings)
    try:
        store = Database(settings.db_path)
        try:
            deadline = time.monotonic() + 15
            while not (
                lost := [
                    t
                    for t in store.list_timings(job, None, 0, 100).rows
                    if t["child_status"] == "SpoolLost"
                ]
            ):
                assert time.monotonic() < deadline, "no SpoolLost timing"
                await asyncio.sleep(0.2)
        finally:
            store.close()
        (timing,) = lost
        assert timing["message_comment"].startswith("3 segments encoder ")
        assert f"taken over by encoder {other}" in timing["message_comment"]
        assert not (settings.spool_dir / str(job)).exists()
    finally:
        await server.close()
