"""The cuts' runner against a storage that does not answer (a real connection to a
port nobody listens on): the cut is delayed, not failed, and its attempt not counted."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from api.database import Database, utcnow
from api.hosts import Hosts
from api.lives import LiveJobs
from api.settings import Settings
from api.videos.cuts import VideoCuts
from api.videos.store import PROCESSING, VideoStore
from packager.object_store import S3Storage
from tests.support.legacy_store import job_row
from tests.support.ports import free_port

HASH = bytes(range(32))


def a_video(database: Database) -> tuple[VideoStore, dict[str, Any]]:
    database.create_project("p1", "p1", "key-p1", HASH)
    job_id = database.insert_job(job_row("p1", "media", "shows", "news"), ["720p"])
    videos = VideoStore(database)
    public_id = str(uuid.uuid4())
    now = utcnow()
    videos.insert(
        {
            "public_id": public_id,
            "project_id": "p1",
            "live_job_id": job_id,
            "name": "a cut",
            "status": PROCESSING,
            "visibility": 2,
            "from_ms": 0,
            "to_ms": 2000,
            "video_prefix": f"shows/news/videos/private/{public_id}",
            "created_at": now,
            "next_attempt_at": now,
        }
    )
    video = videos.get("p1", public_id)
    assert video is not None
    return videos, video


async def wait_for(predicate: Any, within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)


async def test_a_storage_outage_delays_a_cut_and_does_not_fail_it(tmp_path: Path) -> None:
    database = Database(tmp_path / "store.sqlite3")
    down = S3Storage(f"http://127.0.0.1:{free_port()}", "k", "s", "us-east-1", max_attempts=1)
    settings = Settings(data_dir=tmp_path)
    lives = LiveJobs(settings, database, down, CollectorRegistry(), Hosts(database, settings))
    videos, video = a_video(database)
    cuts = VideoCuts(database, videos, lives, down, "host-1")
    await cuts.start()
    try:

        async def delayed() -> bool:
            row = await database.call(videos.get_by_id, video["id"])
            return (
                row is not None
                and row["claimed_by"] is None
                and row["next_attempt_at"] > video["next_attempt_at"]
            )

        await wait_for(delayed)
        row = await database.call(videos.get_by_id, video["id"])
        assert row is not None
        assert (row["status"], row["error"], row["attempts"]) == (PROCESSING, None, 0)
    finally:
        await cuts.stop()
        database.close()
