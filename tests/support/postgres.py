"""A real PostgreSQL for the store tests: Debian's server, started by the suite.

One server per test process (each pytest-xdist worker starts its own), initialised
into a fresh temporary directory and listening only on a unix socket there (no TCP
port to race for). initdb refuses root: as root the server runs as the unprivileged
`postgres` user (`setpriv`), otherwise as the user running the tests. The postmaster is
this process's child, with a parent-death signal: a session killed outright leaves no
server running. The superuser has a password (scram-sha-256), as a deployment's would.
Each test gets a database of its own (`postgres_url`), dropped after it. The server is
stopped at the end of the session.

Fixtures: `postgres_server` (session), `postgres_url` (a fresh database, its URL) and
`store_target` (parametrized: what `Database(...)` opens, SQLite or PostgreSQL).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SERVER_USER = "postgres"  # when the tests run as root: Debian's postgres user
SUPERUSER = "onair"
START_TIMEOUT_SECONDS = 60
DIRECTORY_PREFIX = "onair-pg-"


def _bin_dir() -> Path:
    """Debian's server binaries (the newest installed version), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found: apt-get install postgresql (make test-deps)"
        )
    return Path(initdb).parent


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


class PostgresServer:
    """A PostgreSQL server in `base` (data/, the socket and the log), owned by an
    unprivileged user; `url(database)` connects over the unix socket."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.password = secrets.token_urlsafe(18)
        self._bin = _bin_dir()
        self._process: subprocess.Popen[bytes] | None = None

    def _as_server_user(self, *command: str) -> list[str]:
        """`command` as the server's user; the server dies with this process (a session
        killed outright leaves no server behind: the parent-death signal stops it)."""
        # A change of user clears the parent-death signal: it is set after, by a second
        # setpriv already running as the server's user.
        user = ["--reuid", SERVER_USER, "--regid", SERVER_USER, "--clear-groups", "--"]
        return [
            *(["setpriv", *user] if os.geteuid() == 0 else []),
            "setpriv",
            "--pdeathsig",
            "INT",  # PostgreSQL's fast shutdown
            "--",
            *command,
        ]

    def start(self) -> None:
        password_file = self.base / "password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        if os.geteuid() == 0:
            server_user = pwd.getpwnam(SERVER_USER)
            for path in (self.base, password_file):
                os.chown(path, server_user.pw_uid, server_user.pw_gid)
        try:
            subprocess.run(
                self._as_server_user(
                    str(self._bin / "initdb"),
                    f"--pgdata={self.data}",
                    f"--username={SUPERUSER}",
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ),
                cwd=self.base,
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_SECONDS,
            )
        finally:
            password_file.unlink()
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                self._as_server_user(
                    str(self._bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    f"unix_socket_directories={self.base}",
                    "-c",
                    "fsync=off",  # a throwaway cluster: speed over durability
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ),
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start:\n{self.log.read_text()}")
            try:
                self.admin().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are cut) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(START_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL of `database` over the unix socket, with the password."""
        return f"postgresql://{SUPERUSER}:{self.password}@/{database}?host={self.base}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.base),
            dbname="postgres",
            user=SUPERUSER,
            password=self.password,
            autocommit=True,
        )

    def create_database(self) -> str:
        name = "onair_" + secrets.token_hex(6)
        with self.admin() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def remove_stale_directories(max_age_seconds: float = 3600) -> None:
    """What sessions killed outright left in the temporary directory: their servers
    stopped with them (no postmaster.pid), the files stayed."""
    for base in Path(tempfile.gettempdir()).glob(DIRECTORY_PREFIX + "*"):
        try:
            stale = time.time() - base.stat().st_mtime > max_age_seconds
        except FileNotFoundError:
            continue
        if stale and not (base / "data" / "postmaster.pid").exists():
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This test process's PostgreSQL server (xdist workers each start their own)."""
    remove_stale_directories()
    server = PostgresServer(Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)))
    try:
        server.start()
    except subprocess.CalledProcessError as failed:
        server.stop()
        output = (failed.stderr or failed.stdout or b"").decode(errors="replace")
        raise RuntimeError(f"initdb failed: {output}") from None
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database (dropped after the test)."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """What `Database(...)` opens, once per engine: a SQLite file in a new data dir, or
    the URL of a new PostgreSQL database (the server starts only when asked for)."""
    if request.param == "sqlite":
        return tmp_path / "data" / "onair.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url
