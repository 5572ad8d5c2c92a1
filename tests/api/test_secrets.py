"""Secrets at rest: a private data dir, a private database, no development key in production."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from api import cli
from api.database import Database
from api.settings import DOCUMENTED, ConfigError, Settings, load_settings
from packager.s3server import EmbeddedS3
from tests.support.service import ONAIR, Api, service_env

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most machines run with (022): what made the database world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def db_files(db_path: Path) -> list[Path]:
    return [db_path.with_name(db_path.name + suffix) for suffix in ("", "-wal", "-shm")]


async def test_a_new_data_dir_is_0700_and_the_database_0600(api: Api) -> None:
    await api.create_job()  # the running app has the database open: -wal and -shm exist
    assert mode(api.settings.data_dir) == 0o700
    for path in db_files(api.settings.db_path):
        assert path.exists(), path
        assert mode(path) == 0o600, path


def test_an_existing_loose_data_dir_is_tightened_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    db_path = data_dir / "onair.sqlite3"
    # The database as an older onair left it, open in WAL mode (so -wal/-shm exist).
    holder = sqlite3.connect(db_path)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE t (x)")
        holder.commit()
        for path in db_files(db_path):
            path.chmod(0o644)
        data_dir.chmod(0o755)
        database = Database(db_path)
        try:
            assert mode(data_dir) == 0o700
            for path in db_files(db_path):
                assert mode(path) == 0o600, path
        finally:
            database.close()
    finally:
        holder.close()


def test_the_data_dir_is_created_0700_even_with_its_parents(tmp_path: Path) -> None:
    database = Database(tmp_path / "deep" / "data" / "onair.sqlite3")
    database.close()
    assert mode(tmp_path / "deep" / "data") == 0o700
    assert mode(tmp_path / "deep" / "data" / "onair.sqlite3") == 0o600


def test_the_key_files_in_the_data_dir_are_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    database = Database(settings.db_path)
    try:
        first = cli.dev_project(settings, database)
        path = settings.data_dir / cli.DEV_PROJECT_FILE
        assert mode(path) == 0o600
        path.chmod(0o644)  # as a copy or an older onair may have left it
        assert cli.dev_project(settings, database) == first
        assert mode(path) == 0o600
    finally:
        database.close()
    cli.with_s3_credentials(settings)
    credentials = settings.data_dir / cli.S3_CREDENTIALS_FILE
    assert mode(credentials) == 0o600
    credentials.chmod(0o644)
    cli.with_s3_credentials(settings)
    assert mode(credentials) == 0o600


# -- ONAIR_DEV_PROJECT ------------------------------------------------------------------


def test_onair_dev_project_is_a_documented_boolean_defaulting_to_true() -> None:
    assert load_settings({}).dev_project is True
    for value, expected in (("false", False), ("0", False), ("No", False), ("true", True)):
        assert load_settings({"ONAIR_DEV_PROJECT": value}).dev_project is expected
    with pytest.raises(ConfigError) as error:
        load_settings({"ONAIR_DEV_PROJECT": "maybe"})
    assert "ONAIR_DEV_PROJECT" in str(error.value)
    assert "DEV_PROJECT" in DOCUMENTED


def test_without_the_dev_project_no_project_and_no_key_is_made(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", dev_project=False)
    lines = cli.dev_project_banner(settings)
    assert not any("API key" in line for line in lines)
    assert "onair project create" in "\n".join(lines)
    assert not (settings.data_dir / cli.DEV_PROJECT_FILE).exists()
    enabled = cli.dev_project_banner(Settings(data_dir=tmp_path / "data"))
    assert [line.split(":")[0] for line in enabled] == [
        "Development project",
        "Development API key",
        "Development webhook secret",
    ]
    assert (settings.data_dir / cli.DEV_PROJECT_FILE).exists()


def test_onair_run_with_onair_dev_project_false_prints_no_key(
    tmp_path: Path, s3_server: EmbeddedS3
) -> None:
    env = service_env(
        tmp_path,
        ONAIR_S3_ENDPOINT=s3_server.endpoint,
        ONAIR_S3_ACCESS_KEY=s3_server.access_key,
        ONAIR_S3_SECRET_KEY=s3_server.secret_key,
        ONAIR_DEV_PROJECT="false",
    )
    process = subprocess.Popen(
        [ONAIR, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops the service"):
                break
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
    output = "".join(lines)
    assert "Ctrl-C stops the service" in output, output
    assert "No development project" in output
    assert "Development API key" not in output and "oa_" not in output
    data_dir = tmp_path / "data"
    assert not (data_dir / cli.DEV_PROJECT_FILE).exists()
    assert mode(data_dir) == 0o700


def test_the_container_entrypoint_turns_the_dev_project_off() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "ONAIR_DEV_PROJECT=false" in dockerfile
    documents = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "onair.yaml").read_text()))
    (statefulset,) = [d for d in documents if d["kind"] == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["ONAIR_DEV_PROJECT"] == "false"
