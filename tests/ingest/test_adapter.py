"""DecoderSession, the one session adapter (production's): a publisher's stream into
its job's LiveDecoder, with the job told of first media, refusals and the end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.adapter import DecoderSession
from ingest.decode import LiveDecoder
from ingest.media import MediaQueue
from ingest.session import FLV, MPEGTS, IngestProtocol, PublishRequest
from tests.support.fakes import Collector
from tests.support.media import sample_tags
from tests.support.waiting import async_wait_until


class Owner:
    """The job's side: records the adapter's callbacks and the connection's fate."""

    def __init__(self) -> None:
        self.first_media: list[DecoderSession] = []
        self.closed: list[tuple[DecoderSession, str]] = []
        self.connection: list[tuple[str, str]] = []  # ("close" | "reject", reason)

    def request(
        self, container: str = FLV, protocol: IngestProtocol = IngestProtocol.RTMP
    ) -> PublishRequest:
        return PublishRequest(
            protocol,
            "live",
            "key",
            "127.0.0.1:50000",
            container,
            close=lambda reason: self.connection.append(("close", reason)),
            reject=lambda reason: self.connection.append(("reject", reason)),
        )

    def session(self, decoder: LiveDecoder, container: str = FLV) -> DecoderSession:
        return DecoderSession(
            decoder,
            self.request(container),
            on_first_media=self.first_media.append,
            on_closed=lambda session, reason: self.closed.append((session, reason)),
        )


@pytest.fixture
def queue() -> MediaQueue:
    return MediaQueue(max_items=100_000)


async def test_feeds_its_decoder_session_and_reports_first_media_and_the_end(
    flv_sample: Path, queue: MediaQueue
) -> None:
    owner, collector = Owner(), Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        session = owner.session(decoder)
        assert (session.index, session.active) == (0, True)
        metadata, tags = sample_tags(flv_sample)
        session.on_metadata(metadata)
        assert owner.first_media == []  # metadata is not media
        for tag in tags:
            session.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        assert owner.first_media == [session] and session.media_seen
        session.on_close("unpublished")
        session.on_close("closed by peer")  # once only
        assert owner.closed == [(session, "unpublished")]
        await collector.async_wait_ends(1)
        assert collector.ends[0].reason == "unpublished"
        assert len(collector.kinds("video")) == 90
        assert session.refused is None and owner.connection == []
        session.close("job offline")  # the job's side drops the connection
        assert owner.connection == [("close", "job offline")]
    finally:
        decoder.stop()
        collector.stop()


async def test_a_stale_session_goes_quiet(flv_sample: Path, queue: MediaQueue) -> None:
    """A newer session took the decoder over (a reconnect while the old connection
    lingers): the old one forwards nothing, and its late close does not end the new."""
    owner, collector = Owner(), Collector(queue)
    decoder = LiveDecoder(queue, max_pixels=1920 * 1080)
    try:
        stale = owner.session(decoder)
        fresh = owner.session(decoder)
        assert (stale.index, fresh.index) == (0, 1)
        assert not stale.active and fresh.active
        _, tags = sample_tags(flv_sample)
        stale.on_metadata({"width": 7680.0, "height": 4320.0})  # not even looked at
        for tag in tags:
            stale.on_media(tag.kind, tag.timestamp_ms, tag.payload)  # ignored
            fresh.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        assert owner.first_media == [fresh] and not stale.media_seen
        stale.on_close("late close of the old connection")
        assert decoder.current_session == 1
        assert owner.closed == [(stale, "late close of the old connection")]  # still told
        fresh.on_close("bye")
        await collector.async_wait_ends(2)
        assert [(e.session, e.reason) for e in collector.ends] == [
            (0, "replaced by a new session"),
            (1, "bye"),
        ]
        assert len(collector.kinds("video")) == 90
        assert fresh.refused is None and stale.refused is None  # 8K never reached it
    finally:
        decoder.stop()
        collector.stop()


async def test_a_source_declared_too_large_is_rejected_before_any_media(
    flv_sample: Path, queue: MediaQueue
) -> None:
    owner, collector = Owner(), Collector(queue)
    timings: list[str] = []
    decoder = LiveDecoder(queue, max_pixels=320 * 240 - 1, on_refused=timings.append)
    try:
        session = owner.session(decoder)
        metadata, tags = sample_tags(flv_sample)
        session.on_metadata(metadata)  # 320x240: refused from the event loop
        reason = "source is 320x240, above the 76799-pixel limit of this host"
        assert session.refused == reason and timings == [reason]
        await async_wait_until(lambda: bool(owner.connection), 2, "the rejection")
        assert owner.connection == [("reject", reason)]  # once, on the loop
        for tag in tags:
            session.on_media(tag.kind, tag.timestamp_ms, tag.payload)  # nothing taken
        assert not session.media_seen and owner.first_media == []
        session.on_close(f"publish rejected: {reason}")
        # refused before any media: its owner leaves the job waiting, not interrupted
        assert owner.closed == [(session, f"publish rejected: {reason}")]
        assert session.refused and not session.media_seen
        await collector.async_wait_ends(1)
        assert collector.ends[0].reason == reason
        assert not collector.kinds("video")
    finally:
        decoder.stop()
        collector.stop()


async def test_a_source_decoded_too_large_is_rejected_from_the_decode_thread(
    flv_sample: Path, queue: MediaQueue
) -> None:
    owner, collector = Owner(), Collector(queue)
    decoder = LiveDecoder(queue, max_pixels=320 * 240 - 1)
    try:
        session = owner.session(decoder)
        _, tags = sample_tags(flv_sample)  # no metadata: only decoding tells the size
        for tag in tags:
            session.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        await async_wait_until(lambda: bool(owner.connection), 10, "the rejection")
        assert owner.connection == [("reject", session.refused)]
        assert session.media_seen  # its owner marks the job interrupted
        assert not collector.kinds("video")  # no frame of it was queued
        session.on_media(*next((t.kind, t.timestamp_ms, t.payload) for t in tags))
        session.on_close("publish rejected")
        assert [reason for _, reason in owner.closed] == ["publish rejected"]
    finally:
        decoder.stop()
        collector.stop()


async def test_a_byte_stream_session_is_fed_its_container(
    ts_sample: Path, queue: MediaQueue
) -> None:
    """What an SRT server will do: a request naming MPEG-TS, then bytes."""
    owner, collector = Owner(), Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        session = owner.session(decoder, MPEGTS)
        data = await asyncio.to_thread(ts_sample.read_bytes)
        session.on_data(b"")  # nothing: not media yet
        assert owner.first_media == []
        for at in range(0, len(data), 1316):
            session.on_data(data[at : at + 1316])
        assert owner.first_media == [session]
        with pytest.raises(ValueError, match="not tags"):
            session.on_media(9, 0, b"\x17\x01")
        session.on_close("gone")
        await collector.async_wait_ends(1)
        assert len(collector.kinds("video")) == 90
        assert collector.starts[0].wall_clock is not None
    finally:
        decoder.stop()
        collector.stop()


async def test_built_on_the_loop_it_rejects_through_the_loop() -> None:
    """`refuse` may come from any thread: the connection is only touched on the loop."""
    owner = Owner()
    decoder = LiveDecoder(MediaQueue())
    try:
        session = owner.session(decoder)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, session.refuse, "too large")
        await loop.run_in_executor(None, session.refuse, "again")
        await async_wait_until(lambda: bool(owner.connection), 2, "the rejection")
        await asyncio.sleep(0.05)
        assert owner.connection == [("reject", "too large")]
    finally:
        decoder.stop()
