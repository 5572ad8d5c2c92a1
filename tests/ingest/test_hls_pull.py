"""HLS pull ingest against a real local HTTP source: an aiohttp server on 127.0.0.1 (and
127.0.0.2) serving segments the ffmpeg CLI made, as a sliding live window the test
appends to in real time, or as a VOD. A fake admit records its requests and returns a
session writing the fed bytes to a file (a unit test of the puller alone).

A user checks that every segment was fed once, in order (the fed bytes are the
segments' bytes), that ffprobe counts every frame in them and ffmpeg reads them
cleanly, and that the events say what happened to the source.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from ingest.hls.pull import (
    ENDED_REASON,
    LIVE_START_SEGMENTS,
    MediaPlaylist,
    Segment,
    SourceError,
    best_variant,
    due_segments,
    parse_playlist,
    redacted,
)
from ingest.hls.pull import HlsPuller as Puller
from ingest.session import MPEGTS, IngestProtocol, PublishRefused, PublishRequest
from media.outbound import OutboundPolicy
from tests.support.hls_source import (
    SEGMENT_COUNT,
    Source,
    frames,
    make_segments,
    serve_source,
    warnings_reading,
)
from tests.support.waiting import async_wait_until

LOOPBACK = OutboundPolicy(allow_private=True)


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return make_segments(tmp_path_factory.mktemp("hls"))


@pytest.fixture
async def source(segments: list[bytes]) -> AsyncIterator[Source]:
    async with serve_source(segments) as box:
        yield box


# onair's side, faked: an admit callback and a session recording into a file


class RecordingSession:
    """A publish session writing what it is fed to a file; slows the feeder now and then."""

    def __init__(self, path: Path, on_first_data: Callable[[], None] | None = None) -> None:
        self.path = path
        self._file = path.open("wb")
        self.closed: str | None = None
        self.chunks = 0
        self._on_first_data = on_first_data

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        raise AssertionError("an HLS puller sends bytes, not RTMP metadata")

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        raise AssertionError("an HLS puller sends bytes, not RTMP messages")

    def on_data(self, data: bytes) -> None:
        assert self.closed is None, "data after on_close"
        self._file.write(data)
        self.chunks += 1
        if self.chunks == 1 and self._on_first_data is not None:
            self._on_first_data()

    def wait_for_room(self) -> Awaitable[None] | None:
        if self.chunks % 5:
            return None
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.005, room.set_result, None)
        return room

    def on_close(self, reason: str) -> None:
        assert self.closed is None, "on_close twice"
        self.closed = reason
        self._file.close()

    def data(self) -> bytes:
        return self.path.read_bytes()


class Onair:
    """The admit callback: refuses `refusals` times first, then admits a new session."""

    def __init__(self, directory: Path, refusals: int = 0) -> None:
        self.directory = directory
        self.refusals = refusals
        self.requests: list[PublishRequest] = []
        self.sessions: list[RecordingSession] = []
        self.events: list[tuple[str, str]] = []
        self.on_first_data: Callable[[PublishRequest], None] | None = None

    async def admit(self, request: PublishRequest) -> RecordingSession:
        self.requests.append(request)
        if self.refusals > 0:
            self.refusals -= 1
            raise PublishRefused("the job is still finishing", HTTPStatus.SERVICE_UNAVAILABLE)
        hook = self.on_first_data
        session = RecordingSession(
            self.directory / f"fed{len(self.sessions)}.ts",
            None if hook is None else lambda: hook(request),
        )
        self.sessions.append(session)
        return session

    def on_event(self, name: str, description: str) -> None:
        self.events.append((name, description))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
def onair(tmp_path: Path) -> Onair:
    return Onair(tmp_path)


@pytest.fixture
async def pullers() -> AsyncIterator[list[Puller]]:
    made: list[Puller] = []
    yield made
    for puller in made:
        await puller.stop()


def make_puller(
    onair: Onair, pullers: list[Puller], url: str, policy: OutboundPolicy = LOOPBACK, **options: Any
) -> Puller:
    options.setdefault("retry_seconds", 0.05)
    puller = Puller(
        onair.admit,
        stream_key="key-1",
        source_url=url,
        policy=policy,
        on_event=onair.on_event,
        label="test",
        **options,
    )
    pullers.append(puller)
    return puller


def ended(onair: Onair, puller: Puller) -> Callable[[], bool]:
    return lambda: not puller.running and "SourceEnded" in onair.names()


# The pure parts


def test_a_master_playlist_gives_its_variants_and_the_best_is_the_highest_bandwidth() -> None:
    text = Source([]).master_playlist()
    variants = parse_playlist(text, "http://h.example/live/master.m3u8?token=t")
    assert isinstance(variants, list)
    assert best_variant(variants) == "http://h.example/live/high/index.m3u8"


def test_a_media_playlist_gives_its_segments_by_media_sequence() -> None:
    text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n"
    text += "#EXTINF:2.0,\na.ts?sig=1\n#EXT-X-DISCONTINUITY\n#EXTINF:1.5,\n/b.ts\n"
    playlist = parse_playlist(text, "http://h.example:8080/x/i.m3u8")
    assert playlist == MediaPlaylist(
        2.0,
        (
            Segment(41, "http://h.example:8080/x/a.ts?sig=1", 2.0, False),
            Segment(42, "http://h.example:8080/b.ts", 1.5, True),
        ),
        ended=False,
    )


@pytest.mark.parametrize(
    "text",
    [
        "<html>not found</html>",
        "#EXTM3U\n#EXTINF:1,\na.ts\n",  # no target duration
        '#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:1,\na.m4s\n',
    ],
)
def test_what_is_not_a_playlist_of_mpeg_ts_segments_is_a_source_error(text: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_playlist(text, "http://h.example/i.m3u8?token=secret")
    assert "secret" not in str(caught.value)


def test_a_live_source_is_joined_near_its_end_and_a_vod_pulled_whole() -> None:
    playlist = MediaPlaylist(
        1.0, tuple(Segment(n, f"http://h/{n}.ts", 1.0, False) for n in range(100, 130)), False
    )
    joined = due_segments(playlist, None, joining=True, whole=False)
    assert [s.sequence for s in joined] == list(range(130 - LIVE_START_SEGMENTS, 130))
    assert len(due_segments(playlist, None, joining=False, whole=True)) == 30
    following = due_segments(playlist, 127, joining=False, whole=False)
    assert [s.sequence for s in following] == [127, 128, 129]
    assert (
        redacted("https://u:p@h.example:444/a/b.m3u8?token=s#f") == "https://h.example:444/a/b.m3u8"
    )


# Against the real wire


@pytest.mark.slow
async def test_a_live_source_is_pulled_once_in_order_until_its_endlist(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    source.published = 5  # a window of 5 when the job goes online: joined 3 from the end
    puller = make_puller(onair, pullers, source.url("/live/index.m3u8"))
    await puller.start()
    publishing = asyncio.create_task(source.publish_live())
    await async_wait_until(ended(onair, puller), 15, "the live's end")
    await publishing

    (request,) = onair.requests
    assert (request.protocol, request.app, request.stream_key) == (
        IngestProtocol.HLS,
        "pull",
        "key-1",
    )
    assert (request.remote, request.container) == (f"127.0.0.1:{source.port}", MPEGTS)
    (session,) = onair.sessions
    assert session.closed == ENDED_REASON
    first = SEGMENT_COUNT - 3 - LIVE_START_SEGMENTS
    assert session.data() == b"".join(source.segments[first:])  # each once, in order
    assert all(source.hits[f"/live/seg{n}.ts"] == 1 for n in range(first, SEGMENT_COUNT))
    assert not any(source.hits[f"/live/seg{n}.ts"] for n in range(first))
    assert (puller.segments_fed, puller.segments_skipped) == (SEGMENT_COUNT - first, 0)
    assert onair.names() == ["SourceEnded"]

    expected = Counter[str]()
    for n in range(first, SEGMENT_COUNT):
        one = session.path.with_name(f"seg{n}.ts")
        one.write_bytes(source.segments[n])
        expected.update(frames(one))
    assert frames(session.path) == expected
    assert expected["video"] == 30 * (SEGMENT_COUNT - first)
    assert warnings_reading(session.path) == ""


@pytest.mark.slow
async def test_a_playlist_failing_for_3_s_is_reported_and_pulling_resumes(
    source: Source, onair: Onair, pullers: list[Puller], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ingest.hls.pull")
    source.published = 2
    url = source.url("/live/index.m3u8?token=secret-token")
    puller = make_puller(onair, pullers, url, retry_seconds=0.25, give_up_seconds=30)
    await puller.start()
    publishing = asyncio.create_task(source.publish_live())
    await async_wait_until(lambda: source.published >= 3 and puller.segments_fed >= 3, 10)
    source.playlist_down = True
    await asyncio.sleep(3)  # the outage itself: real time is what is tested
    source.playlist_down = False
    await async_wait_until(ended(onair, puller), 15, "the live's end")
    await publishing

    assert onair.names() == ["SourceFailing", "SourceRecovered", "SourceEnded"]
    failing = onair.events[0][1]
    assert failing == f"GET http://127.0.0.1:{source.port}/live/index.m3u8: 404 Not Found"
    assert re.fullmatch(r"after [3-5] s", onair.events[1][1])
    (session,) = onair.sessions  # the session stayed open through the outage
    assert session.closed == ENDED_REASON
    assert session.data() == b"".join(source.segments)  # none lost, none twice
    assert "secret-token" not in caplog.text


@pytest.mark.slow
async def test_a_source_failing_too_long_loses_its_session_and_a_new_one_follows(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    source.published = 3
    puller = make_puller(onair, pullers, source.url("/live/index.m3u8"), give_up_seconds=0.5)
    await puller.start()
    await async_wait_until(lambda: puller.segments_fed == 3, 10)
    source.playlist_down = True
    await async_wait_until(lambda: onair.sessions[0].closed is not None, 10)
    assert onair.sessions[0].closed == (
        f"source unavailable: GET http://127.0.0.1:{source.port}/live/index.m3u8: 404 Not Found"
    )
    assert puller.running  # it keeps trying
    source.playlist_down = False
    source.published, source.ended = SEGMENT_COUNT, True
    await async_wait_until(ended(onair, puller), 10, "the source's end")
    first, second = onair.sessions
    assert first.data() == b"".join(source.segments[:3])
    # A new session joins the source as a live is joined: near its end.
    assert second.data() == b"".join(source.segments[-LIVE_START_SEGMENTS:])
    assert second.closed == ENDED_REASON
    assert puller.segments_skipped == SEGMENT_COUNT - 3 - LIVE_START_SEGMENTS


async def test_a_master_playlist_is_followed_to_its_highest_bandwidth_variant(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    puller = make_puller(onair, pullers, source.url("/master.m3u8"))
    await puller.start()
    await async_wait_until(ended(onair, puller), 10, "the VOD pulled whole")
    assert onair.sessions[0].data() == b"".join(source.segments)  # ENDLIST: pulled whole
    assert {path.split("/")[1] for path in source.hits} == {"master.m3u8", "high"}


async def test_a_segment_too_large_or_missing_is_skipped_after_a_few_tries(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    limit = max(len(s) for s in source.segments) + 4096
    source.oversized[2] = limit
    source.missing.add(4)
    puller = make_puller(onair, pullers, source.url("/vod/index.m3u8"), max_segment_bytes=limit)
    await puller.start()
    await async_wait_until(ended(onair, puller), 10, "the VOD pulled")
    fed = [s for n, s in enumerate(source.segments) if n not in (2, 4)]
    assert onair.sessions[0].data() == b"".join(fed)
    assert (puller.segments_fed, puller.segments_skipped) == (SEGMENT_COUNT - 2, 2)
    assert source.hits["/vod/seg2.ts"] == source.hits["/vod/seg4.ts"] == 3
    assert onair.names() == ["SourceFailing", "SourceRecovered"] * 2 + ["SourceEnded"]
    assert "over the limit" in onair.events[0][1]
    assert onair.events[2][1].endswith("/vod/seg4.ts: 404 Not Found")


async def test_the_default_policy_refuses_loopback_before_any_request(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    puller = make_puller(onair, pullers, source.url("/vod/index.m3u8"), OutboundPolicy())
    await puller.start()
    await async_wait_until(lambda: "SourceFailing" in onair.names(), 10)
    await puller.stop()
    assert "refused" in onair.events[0][1] and "loopback" in onair.events[0][1]
    assert not source.hits and not onair.requests


async def test_a_redirect_to_a_private_address_is_refused_at_the_hop(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    # 127.0.0.2 stands for a public source (trusted); it redirects to 127.0.0.1.
    policy = OutboundPolicy(trusted_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    puller = make_puller(onair, pullers, source.url("/redirect", "127.0.0.2"), policy)
    await puller.start()
    await async_wait_until(lambda: "SourceFailing" in onair.names(), 10)
    await puller.stop()
    assert "refused" in onair.events[0][1] and "redirect 1" in onair.events[0][1]
    assert set(source.hits) == {"/redirect"} and not onair.requests


async def test_a_refused_admission_is_reported_once_and_tried_again(
    source: Source, tmp_path: Path, pullers: list[Puller]
) -> None:
    onair = Onair(tmp_path, refusals=2)
    puller = make_puller(onair, pullers, source.url("/vod/index.m3u8"))
    await puller.start()
    await async_wait_until(ended(onair, puller), 10, "the VOD pulled")
    assert onair.events[0] == ("SourceRefused", "the job is still finishing")
    assert onair.names() == ["SourceRefused", "SourceEnded"]
    assert len(onair.requests) == 3
    assert onair.sessions[0].data() == b"".join(source.segments)


async def test_a_job_another_host_pulls_is_not_fetched_here_until_it_is_free(
    source: Source, onair: Onair, pullers: list[Puller], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ingest.hls.pull.CLAIM_POLL_SECONDS", 0.05)
    free = asyncio.Event()
    asked = 0

    async def claim() -> bool:
        nonlocal asked
        asked += 1
        return free.is_set()

    puller = make_puller(onair, pullers, source.url("/vod/index.m3u8"), claim=claim)
    await puller.start()
    await async_wait_until(lambda: asked >= 5, 10, "the claim asked again")
    assert not source.hits and onair.requests == []  # nothing fetched, no admission
    free.set()  # the other host let the job go
    await async_wait_until(ended(onair, puller), 10, "the VOD pulled")
    assert onair.sessions[0].data() == b"".join(source.segments)


async def test_onair_closing_the_session_gets_a_new_one_and_rejecting_stops(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    actions = iter(
        [
            lambda request: request.close("the publisher was kicked"),
            lambda request: request.reject("the source is too large"),
        ]
    )
    onair.on_first_data = lambda request: next(actions)(request)
    puller = make_puller(onair, pullers, source.url("/vod/index.m3u8"))
    await puller.start()
    await async_wait_until(lambda: not puller.running, 10, "the puller's stop")
    first, second, *others = onair.sessions
    assert first.closed == "the publisher was kicked" and first.chunks == 1
    assert second.closed == "the source is too large" and second.chunks == 1
    assert not others and "SourceEnded" not in onair.names()
    assert second.data() == source.segments[1][: len(second.data())]  # the next segment on
    await puller.stop()  # idempotent, after the fact too


@pytest.mark.slow
async def test_a_window_that_moved_on_is_followed_across_the_jump(
    source: Source, onair: Onair, pullers: list[Puller]
) -> None:
    source.published = 3
    puller = make_puller(onair, pullers, source.url("/live/index.m3u8"))
    await puller.start()
    await async_wait_until(lambda: puller.segments_fed == 3, 10)
    source.window = 2  # segments 3 to 5 come and go unseen
    source.published, source.ended = SEGMENT_COUNT, True
    await async_wait_until(ended(onair, puller), 10, "the source's end")
    (session,) = onair.sessions  # one session across the jump: the TS decoder resyncs
    assert session.data() == b"".join(source.segments[:3] + source.segments[-2:])
    assert (puller.segments_fed, puller.segments_skipped) == (5, 3)


async def test_a_reject_from_inside_admit_feeds_nothing_and_stops(
    source: Source, tmp_path: Path, pullers: list[Puller]
) -> None:
    sessions: list[RecordingSession] = []

    async def admit(request: PublishRequest) -> RecordingSession:
        sessions.append(RecordingSession(tmp_path / "fed.ts"))
        request.reject("the source is too large")
        return sessions[-1]

    puller = Puller(
        admit, stream_key="k", source_url=source.url("/vod/index.m3u8"), policy=LOOPBACK
    )
    pullers.append(puller)
    await puller.start()
    await async_wait_until(lambda: not puller.running, 10, "the puller's stop")
    (session,) = sessions
    assert session.closed == "the source is too large" and session.chunks == 0
