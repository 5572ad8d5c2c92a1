"""The videos' rows on both engines (SQLite, PostgreSQL): one host holds a cut, a
stopped host's cuts are due again, a video's end queues its webhook in the same
transaction; and the pure parts: playback tokens, the private playlists' rewriting."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from api.database import Database, utcnow
from api.database.schema import webhook_deliveries
from api.videos.playlists import resolve_key, rewrite, uris
from api.videos.store import FAILED, PROCESSING, READY, VideoStore
from api.videos.tokens import make_token, token_problem
from api.webhooks.events import video_event
from tests.support.legacy_store import job_row

HASH = bytes(range(32))
EARLY, NOW, LATER = (
    "2026-01-01T00:00:00.000Z",
    "2026-01-01T00:01:00.000Z",
    "2026-01-01T00:02:00.000Z",
)


@pytest.fixture
def store(store_target: str | Path) -> Any:
    database = Database(store_target)
    yield database
    database.close()


def a_video(
    database: Database, callback_url: str | None = None
) -> tuple[VideoStore, dict[str, Any]]:
    database.create_project("p1", "p1", "key-p1", HASH)
    job_id = database.insert_job(
        job_row("p1", "media", "shows", f"news-{uuid.uuid4()}", callback_url=callback_url), ["720p"]
    )
    videos = VideoStore(database)
    public_id = str(uuid.uuid4())
    videos.insert(
        {
            "public_id": public_id,
            "project_id": "p1",
            "live_job_id": job_id,
            "name": "a cut",
            "status": PROCESSING,
            "visibility": 1,
            "video_prefix": f"shows/news/videos/{public_id}",
            "created_at": utcnow(),
            "next_attempt_at": EARLY,
        }
    )
    video = videos.get("p1", public_id)
    assert video is not None
    return videos, video


def test_one_host_holds_a_cut_and_a_stopped_hosts_cuts_are_due_again(store: Database) -> None:
    videos, video = a_video(store)
    taken: list[list[dict[str, Any]]] = []

    def claim(host: str) -> None:
        taken.append(videos.claim_due(NOW, LATER, host, 5))

    hosts = [threading.Thread(target=claim, args=(f"host-{i}",)) for i in range(4)]
    for host in hosts:
        host.start()
    for host in hosts:
        host.join()
    winners = [rows for rows in taken if rows]
    assert len(winners) == 1 and winners[0][0]["id"] == video["id"]
    assert winners[0][0]["attempts"] == 1
    holder = winners[0][0]["claimed_by"]
    assert videos.claim_due(NOW, LATER, "another", 5) == []  # held until LATER
    assert videos.renew(video["id"], holder, LATER) is True
    assert videos.renew(video["id"], "another", LATER) is False
    videos.release_claims(holder)  # its runner stops: due again at once
    again = videos.claim_due(NOW, LATER, "another", 5)
    assert [row["id"] for row in again] == [video["id"]] and again[0]["attempts"] == 2


def test_a_storage_outage_delays_a_cut_without_counting_the_attempt(store: Database) -> None:
    videos, video = a_video(store)
    (claimed,) = videos.claim_due(NOW, LATER, "h", 1)
    videos.retry_later(video["id"], "h", LATER, counted=False)
    assert videos.claim_due(NOW, LATER, "h", 1) == []  # not before LATER
    (again,) = videos.claim_due(LATER, "2026-01-01T00:03:00.000Z", "h", 1)
    assert again["attempts"] == claimed["attempts"] == 1


def test_the_end_of_a_video_queues_its_webhook_with_it(store: Database) -> None:
    videos, video = a_video(store, callback_url="https://hooks.example.com/onair")
    videos.claim_due(NOW, LATER, "h", 1)
    job = store.get_job_by_id(video["live_job_id"])
    assert job is not None
    ended = {**video, "status": FAILED, "error": "nothing was recorded"}
    assert (
        videos.finish(video["id"], "other-host", {"status": FAILED}, video_event(job, ended))
        is False
    )
    assert videos.finish(
        video["id"],
        "h",
        {"status": FAILED, "error": "nothing was recorded"},
        video_event(job, ended),
    )
    row = videos.get("p1", video["public_id"])
    assert row is not None and (row["status"], row["error"]) == (FAILED, "nothing was recorded")
    assert row["finished_at"] is not None and row["claimed_by"] is None
    with store.engine.connect() as connection:
        (delivery,) = connection.execute(webhook_deliveries.select()).mappings()
    body = json.loads(delivery["body"])
    assert (delivery["type"], delivery["live_job_id"]) == ("video.failed", video["live_job_id"])
    assert body["data"] == {
        "videoPublicId": video["public_id"],
        "liveVideoId": job["name"],
        "liveJobId": job["id"],
        "status": "Failed",
        "error": "nothing was recorded",
    }
    # Ended is ended: a second end (another host's late one) changes nothing.
    assert not videos.finish(video["id"], None, {"status": READY}, video_event(job, row))


def test_another_projects_video_is_not_found(store: Database) -> None:
    videos, video = a_video(store)
    store.create_project("p2", "p2", "key-p2", HASH)
    assert videos.get("p2", video["public_id"]) is None
    assert videos.page("p2", None, 0, 10).total_count == 0
    assert videos.page("p1", None, 0, 10).rows[0]["public_id"] == video["public_id"]


def test_the_service_secret_is_made_once_for_every_host(store: Database) -> None:
    videos = VideoStore(store)
    first = videos.secret("playback_token_key")
    assert len(first) >= 43 and videos.secret("playback_token_key") == first


# -- pure parts -----------------------------------------------------------------------------


def test_a_playback_token_names_one_video_until_its_time() -> None:
    token = make_token("s3cret", "video-a", 1000)
    assert token_problem("s3cret", "video-a", token, 999.0) is None
    assert token_problem("s3cret", "video-a", token, 1000.0) is not None  # expired
    assert token_problem("s3cret", "video-b", token, 999.0) is not None  # another video
    assert token_problem("other", "video-a", token, 999.0) is not None  # another secret
    later = token.replace("1000.", "9999.", 1)  # its time stretched: the signature fails
    assert token_problem("s3cret", "video-a", later, 999.0) is not None
    assert token_problem("s3cret", "video-a", "garbage", 0.0) == "not a playback token"


MASTER = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x180
180p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=256x144
144p/index.m3u8
"""
MEDIA = """#EXTM3U
#EXT-X-TARGETDURATION:2
#EXT-X-PLAYLIST-TYPE:VOD
#EXTINF:2.000,
seg_000000.ts
#EXTINF:1.500,
../../../../escape.ts
#EXT-X-ENDLIST
"""


def test_playlists_have_every_uri_replaced_and_none_leaves_the_video() -> None:
    assert uris(MASTER) == ["180p/index.m3u8", "144p/index.m3u8"]
    rewritten = rewrite(MASTER, lambda uri: f"playlist.m3u8?variant={uris(MASTER).index(uri)}")
    assert rewritten.splitlines()[3:] == [
        "playlist.m3u8?variant=0",
        "#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=256x144",
        "playlist.m3u8?variant=1",
    ]
    prefix = "live/show/videos/private/abc"
    key = resolve_key(f"{prefix}/master.m3u8", "180p/index.m3u8", prefix)
    assert key == f"{prefix}/180p/index.m3u8"
    assert resolve_key(key, "seg_000000.ts", prefix) == f"{prefix}/180p/seg_000000.ts"
    assert resolve_key(key, "../../../../escape.ts", prefix) is None
    assert resolve_key(key, "https://elsewhere/x.ts", prefix) is None
    media = rewrite(MEDIA, lambda uri: f"https://s3/{uri}?sig")
    assert "https://s3/seg_000000.ts?sig" in media.splitlines()
    keyed = rewrite('#EXT-X-MAP:URI="init.mp4"\n', lambda uri: f"signed/{uri}")
    assert keyed == '#EXT-X-MAP:URI="signed/init.mp4"\n'
