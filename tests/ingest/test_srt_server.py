"""The SRT ingest server with real SRT peers (the ffmpeg CLI, srt-live-transmit), a fake
admission and recording sessions; and its pure parts (stream ids, TS realignment, the
libsrt statistics layout)."""

from __future__ import annotations

import asyncio
import ctypes
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from ingest.session import (
    MPEGTS,
    IngestProtocol,
    PublishRefused,
    PublishRequest,
    TransportStatistics,
    masked_key,
)
from ingest.srt import libsrt
from ingest.srt.server import (
    SrtAccess,
    SrtServer,
    StreamIdError,
    TsAligner,
    parse_resource,
    parse_stream_id,
)
from tests.support.media import ffmpeg_warnings
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.srt import (
    LossyRelay,
    feed_paced,
    live_transmit_cmd,
    pad_to_datagrams,
    srt_url,
)
from tests.support.waiting import async_wait_until

slow = pytest.mark.slow
needs_tools = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("srt-live-transmit") is None,
    reason="ffmpeg and srt-live-transmit (srt-tools) needed",
)

PASSPHRASE = "correct horse battery"
SOURCE_SECONDS = 5
SIZE = "320x180"


# The fake job side


class RecordingSession:
    """A PublishSession that keeps what it is given."""

    def __init__(self, request: PublishRequest) -> None:
        self.request = request
        self.data = bytearray()
        self.closed: list[str] = []

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        raise AssertionError("SRT sends bytes, not metadata")

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        raise AssertionError("SRT sends bytes, not FLV messages")

    def on_data(self, data: bytes) -> None:
        assert not self.closed, "data after on_close"
        self.data += data

    def wait_for_room(self) -> Awaitable[None] | None:
        return None

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


class Jobs:
    """Known keys and their passphrases; records prechecks, requests and sessions."""

    def __init__(self, passphrases: Mapping[str, str | None]) -> None:
        self.passphrases = dict(passphrases)
        self.prechecked: list[str] = []
        self.requests: list[PublishRequest] = []
        self.sessions: dict[str, RecordingSession] = {}

    async def precheck(self, key: str) -> SrtAccess:
        self.prechecked.append(key)
        if key not in self.passphrases:
            raise PublishRefused("unknown stream key", HTTPStatus.NOT_FOUND)
        return SrtAccess(self.passphrases[key])

    async def admit(self, request: PublishRequest) -> RecordingSession:
        self.requests.append(request)
        if request.stream_key in self.sessions:
            raise PublishRefused("already publishing", HTTPStatus.CONFLICT)
        session = RecordingSession(request)
        self.sessions[request.stream_key] = session
        return session


def srt_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("srt-")]


@pytest.fixture
def jobs() -> Jobs:
    return Jobs({"alpha": None, "bravo": None, "plainjob": None, "locked": PASSPHRASE})


StartSrt = Callable[..., Awaitable[SrtServer]]


@pytest.fixture
async def start_srt(jobs: Jobs) -> AsyncIterator[StartSrt]:
    servers: list[SrtServer] = []

    async def start(**options: Any) -> SrtServer:
        server = SrtServer(jobs.admit, jobs.precheck, host="127.0.0.1", port=0, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
    assert srt_threads() == []


@pytest.fixture(scope="module")
def source_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s of testsrc2 320x180 (H.264) and a sine (AAC) as MPEG-TS, made by ffmpeg."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg CLI not installed")
    path = tmp_path_factory.mktemp("srt") / "source.ts"
    output = ["-f", "mpegts", str(path)]
    cmd = ffmpeg_publish_cmd("", size=SIZE, seconds=SOURCE_SECONDS, output=output)
    subprocess.run(cmd, check=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def padded_source(source_ts: Path) -> bytes:
    """The source as srt-live-transmit can send it whole: in 1316-byte datagrams."""
    return pad_to_datagrams(source_ts.read_bytes())


def frame_counts(path: Path) -> dict[str, int]:
    """Frames per stream type, as ffprobe decodes them."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    counts: dict[str, int] = {}
    for line in result.stdout.split():
        kind, frames = line.split(",")[:2]
        counts[kind] = int(frames)
    return counts


async def run(cmd: list[str], timeout_seconds: float = 30.0) -> int:
    process = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        return await asyncio.wait_for(process.wait(), timeout_seconds)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def publish_cmd(url: str, seconds: float = 1, realtime: bool = False) -> list[str]:
    output = ["-f", "mpegts", url]
    return ffmpeg_publish_cmd(url, size=SIZE, seconds=seconds, realtime=realtime, output=output)


class StatsWatch:
    """Samples a request's transport statistics while a publish runs."""

    def __init__(self, request: Callable[[], PublishRequest | None]) -> None:
        self._request = request
        self.samples: list[TransportStatistics] = []
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            request = self._request()
            if request is not None and request.transport_stats is not None:
                stats = request.transport_stats()
                if stats is not None:
                    self.samples.append(stats)
            await asyncio.sleep(0.05)

    async def stop(self) -> TransportStatistics:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        assert self.samples, "no transport statistics while publishing"
        return self.samples[-1]


# Real publishers


@slow
@needs_tools
async def test_two_publishers_at_once_on_one_port_reach_their_own_sessions(
    start_srt: StartSrt, jobs: Jobs, source_ts: Path, padded_source: bytes, tmp_path: Path
) -> None:
    server = await start_srt()
    live = publish_cmd(
        srt_url(server.port, "#!::r=live/alpha,m=publish", linger="2"),
        seconds=SOURCE_SECONDS,
        realtime=True,
    )
    ffmpeg = asyncio.create_task(run(live))
    watch = StatsWatch(lambda: jobs.sessions["alpha"].request if "alpha" in jobs.sessions else None)
    padded = padded_source
    relay = await asyncio.create_subprocess_exec(
        *live_transmit_cmd(server.port, "bravo", linger="2"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert relay.stdin is not None
    try:
        await feed_paced(relay.stdin, padded, bytes_per_second=400_000)
        relay.stdin.close()  # it reads through stdio: the end of its input flushes it
        await async_wait_until(
            lambda: "bravo" in jobs.sessions and len(jobs.sessions["bravo"].data) >= len(padded),
            10,
            "every byte srt-live-transmit sent",
        )
    finally:
        # At the end of its input it neither closes nor exits (Debian's 1.5.1).
        relay.kill()
        await relay.wait()
    assert await ffmpeg == 0
    stats = await watch.stop()
    await async_wait_until(lambda: jobs.sessions["alpha"].closed, 5, "alpha's on_close")
    await server.stop()  # killed, srt-live-transmit said nothing: libsrt waits 5 s for it

    assert sorted(r.stream_key for r in jobs.requests) == ["alpha", "bravo"]
    for request in jobs.requests:
        assert request.protocol is IngestProtocol.SRT
        assert (request.app, request.container) == ("live", MPEGTS)
        assert request.remote.startswith("127.0.0.1:")
    # srt-live-transmit's bytes arrive exactly as the file has them.
    bravo = jobs.sessions["bravo"]
    assert bytes(bravo.data) == padded
    assert len(bravo.closed) == 1
    # ffmpeg's live encode: every frame of the same source, nothing ffmpeg complains of.
    alpha = jobs.sessions["alpha"]
    assert alpha.closed == ["publisher disconnected"]
    received = tmp_path / "alpha.ts"
    received.write_bytes(alpha.data)
    assert frame_counts(received) == frame_counts(source_ts)
    assert frame_counts(source_ts)["video"] == 30 * SOURCE_SECONDS
    assert ffmpeg_warnings(source_ts) == ""
    assert ffmpeg_warnings(received) == ""
    # libsrt's statistics while publishing
    assert stats.rtt_ms > 0
    assert stats.packets_received > 0
    assert stats.packets_dropped == 0
    assert stats.bandwidth_mbps > 0


@slow
@needs_tools
async def test_refusals_happen_before_admission(start_srt: StartSrt, jobs: Jobs) -> None:
    server = await start_srt()
    port = server.port
    attempts = {
        "unknown key": srt_url(port, "#!::r=live/nope,m=publish"),
        "wrong passphrase": srt_url(port, "#!::r=live/locked,m=publish", passphrase="wrong-secret"),
        "no passphrase": srt_url(port, "#!::r=live/locked,m=publish"),
        "passphrase to a job without": srt_url(port, "plainjob", passphrase=PASSPHRASE),
        "playback": srt_url(port, "#!::r=live/plainjob,m=request"),
        "other app": srt_url(port, "#!::r=other/plainjob"),
    }
    right = srt_url(port, "#!::r=live/locked,m=publish", passphrase=PASSPHRASE, linger="2")
    results = await asyncio.gather(
        run(publish_cmd(right)), *(run(publish_cmd(url)) for url in attempts.values())
    )
    assert results[0] == 0
    failed = dict(zip(attempts, results[1:], strict=True))
    assert all(code != 0 for code in failed.values()), failed

    assert [r.stream_key for r in jobs.requests] == ["locked"]
    assert list(jobs.sessions) == ["locked"]
    assert len(jobs.sessions["locked"].data) > 0
    # The stream id is read first: a playback request or another app is not prechecked.
    assert sorted(jobs.prechecked) == ["locked", "locked", "locked", "nope", "plainjob"]
    assert server.refused >= 3  # the others libsrt refused itself (the passphrases)
    await async_wait_until(lambda: server.pending_count == 0, 2, "no pending handshakes")


@slow
@needs_tools
async def test_five_percent_loss_each_way_still_delivers_the_stream(
    start_srt: StartSrt, jobs: Jobs, source_ts: Path, tmp_path: Path
) -> None:
    server = await start_srt(latency_ms=120)
    relay = LossyRelay(("127.0.0.1", server.port), 0.05, seed=7)
    port = await relay.start()
    try:
        watch = StatsWatch(lambda: jobs.requests[0] if jobs.requests else None)
        url = srt_url(port, "#!::r=live/alpha,m=publish", latency_ms=120, linger="3")
        cmd = [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-readrate",
            "2",
            "-i",
            str(source_ts),
            "-c",
            "copy",
            "-f",
            "mpegts",
            url,
        ]
        assert await run(cmd) == 0
        stats = await watch.stop()
        await async_wait_until(lambda: jobs.sessions["alpha"].closed, 8, "on_close")
    finally:
        await relay.stop()
    assert relay.to_server.counts.dropped > 0 and relay.to_publisher.counts.dropped > 0
    received = tmp_path / "lossy.ts"
    received.write_bytes(jobs.sessions["alpha"].data)
    assert stats.packets_lost > 0
    assert stats.packets_retransmitted > 0
    if stats.packets_dropped == 0:  # SRT recovered everything in time
        assert frame_counts(received) == frame_counts(source_ts)
        assert ffmpeg_warnings(received) == ""
    else:  # what was given up is said, and what came is still MPEG-TS
        assert frame_counts(received)["video"] > 0


@slow
@needs_tools
async def test_stop_closes_publishers_and_the_connection_limit_holds(
    start_srt: StartSrt, jobs: Jobs
) -> None:
    server = await start_srt(max_connections=1)
    long_publish = asyncio.create_task(
        run(publish_cmd(srt_url(server.port, "alpha"), seconds=30, realtime=True), 40)
    )
    try:
        await async_wait_until(
            lambda: "alpha" in jobs.sessions and len(jobs.sessions["alpha"].data) > 10_000,
            10,
            "alpha streaming",
        )
        assert server.connection_count == 1
        assert await run(publish_cmd(srt_url(server.port, "bravo"))) != 0
        assert [r.stream_key for r in jobs.requests] == ["alpha"]
        assert "bravo" not in jobs.prechecked  # refused before its precheck

        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 2
        assert jobs.sessions["alpha"].closed == ["dropped: server stopping"]
        assert server.connection_count == 0
        assert srt_threads() == []
        assert jobs.sessions["alpha"].request.transport_stats is not None
        assert jobs.sessions["alpha"].request.transport_stats() is None
    finally:
        long_publish.cancel()
        await asyncio.gather(long_publish, return_exceptions=True)


@slow
@needs_tools
async def test_the_job_side_can_drop_a_publisher(start_srt: StartSrt, jobs: Jobs) -> None:
    server = await start_srt()
    publish = asyncio.create_task(
        run(publish_cmd(srt_url(server.port, "alpha"), seconds=30, realtime=True), 40)
    )
    try:
        await async_wait_until(lambda: jobs.sessions.get("alpha"), 10, "alpha admitted")
        jobs.sessions["alpha"].request.close("job went offline")
        await async_wait_until(lambda: jobs.sessions["alpha"].closed, 2, "on_close")
        assert jobs.sessions["alpha"].closed == ["dropped: job went offline"]
        await async_wait_until(lambda: server.connection_count == 0, 2, "the socket closed")
        assert await asyncio.wait_for(publish, 10) != 0  # the publisher sees the drop
    finally:
        publish.cancel()
        await asyncio.gather(publish, return_exceptions=True)


class HoldingJobs(Jobs):
    """Sessions that ask the server to wait (`wait_for_room`) until `room` is set."""

    def __init__(self) -> None:
        super().__init__({"alpha": None})
        self.room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.calls = 0

    async def admit(self, request: PublishRequest) -> RecordingSession:
        session = await super().admit(request)
        jobs = self

        def wait_for_room() -> Awaitable[None] | None:
            jobs.calls += 1
            return None if jobs.room.done() else asyncio.shield(jobs.room)

        session.wait_for_room = wait_for_room  # type: ignore[method-assign]
        return session


@slow
@needs_tools
async def test_nothing_more_is_read_while_the_session_has_no_room(source_ts: Path) -> None:
    jobs = HoldingJobs()
    server = SrtServer(jobs.admit, jobs.precheck, host="127.0.0.1", port=0)
    await server.start()
    url = srt_url(server.port, "alpha", linger="3")
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-readrate", "2", "-i"]
    publish = asyncio.create_task(run([*cmd, str(source_ts), "-c", "copy", "-f", "mpegts", url]))
    try:
        await async_wait_until(lambda: jobs.calls > 0, 10, "the first bytes")
        await asyncio.sleep(0.3)  # what was handed over before the hold is delivered
        held = len(jobs.sessions["alpha"].data)
        await asyncio.sleep(0.5)
        assert len(jobs.sessions["alpha"].data) == held  # not read while held
        jobs.room.set_result(None)
        assert await publish == 0
        await async_wait_until(lambda: jobs.sessions["alpha"].closed, 5, "on_close")
        assert len(jobs.sessions["alpha"].data) > held
    finally:
        publish.cancel()
        await asyncio.gather(publish, return_exceptions=True)
        await server.stop()


async def test_pending_handshakes_are_limited_per_ip_and_in_total(
    start_srt: StartSrt, jobs: Jobs
) -> None:
    server = await start_srt(max_connections=3, max_pending_per_ip=2)

    async def screen(sock: int, ip: str) -> int | None:
        return await asyncio.to_thread(server._screen, sock, (ip, 5000), b"plainjob")

    # Socket ids no handshake has: libsrt says they do not exist when the sweep asks.
    assert await screen(900_001, "192.0.2.1") is None
    assert await screen(900_002, "192.0.2.1") is None
    assert await screen(900_003, "192.0.2.1") == libsrt.SRT_REJX_OVERLOAD
    assert await screen(900_004, "192.0.2.2") is None
    assert await screen(900_005, "192.0.2.3") == libsrt.SRT_REJX_DOWN
    assert server.pending_count == 3
    assert jobs.prechecked == ["plainjob"] * 3
    # Handshakes that never complete give their slots back.
    await async_wait_until(lambda: server.pending_count == 0, 2, "the sweep")
    assert await screen(900_006, "192.0.2.1") is None


@slow
async def test_a_slow_precheck_is_refused_as_unavailable(jobs: Jobs) -> None:
    async def hanging(key: str) -> SrtAccess:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    server = SrtServer(jobs.admit, hanging, host="127.0.0.1", port=0)
    await server.start()
    try:
        started = time.monotonic()
        reason = await asyncio.to_thread(server._screen, 900_010, ("192.0.2.9", 1), b"alpha")
        assert reason == 1503
        assert time.monotonic() - started < 1.5
    finally:
        await server.stop()


# Stream ids


@pytest.mark.parametrize(
    ("stream_id", "key"),
    [
        ("#!::r=live/k3y-abc,m=publish", "k3y-abc"),
        ("#!::m=publish,r=live/k3y", "k3y"),
        ("#!::r=k3y", "k3y"),
        ("#!::u=someone,r=live/k3y,h=example.com,t=stream", "k3y"),
        ("k3y_plain", "k3y_plain"),
        ("live/k3y", "k3y"),
    ],
)
def test_stream_ids_that_name_a_key(stream_id: str, key: str) -> None:
    assert parse_stream_id(stream_id) == key


def test_a_backup_publishers_stream_id_names_the_backup_application() -> None:
    assert parse_resource("#!::r=backup/k3y,m=publish") == ("backup", "k3y")
    assert parse_resource("backup/k3y") == ("backup", "k3y")
    assert parse_resource("#!::r=k3y") == ("live", "k3y")


@pytest.mark.parametrize(
    ("stream_id", "reason"),
    [
        ("", 1400),
        ("#!::", 1400),
        ("#!::m=publish", 1400),
        ("#!::r=live/k,garbage", 1400),
        ("#!::r=live/k,m=request", 1405),
        ("#!::r=live/k,m=bidirectional", 1405),
        ("#!::r=live/k,m=whatever", 1400),
        ("#!::r=other/k", 1404),
        ("has space", 1400),
        ("k" * 600, 1400),
    ],
)
def test_stream_ids_refused(stream_id: str, reason: int) -> None:
    with pytest.raises(StreamIdError) as raised:
        parse_stream_id(stream_id)
    assert raised.value.reject_reason == reason


def test_keys_are_redacted() -> None:
    assert masked_key("abcdef123456") == "abc…"
    assert masked_key("short") == "…"


# TS realignment


def ts_packets(count: int, pid: int = 0x100) -> bytes:
    """`count` distinct 188-byte packets (continuity counter and payload vary)."""
    packets = []
    for i in range(count):
        header = bytes([0x47, (pid >> 8) & 0x1F, pid & 0xFF, 0x10 | (i & 0x0F)])
        packets.append(header + bytes([i % 251]) * 184)
    return b"".join(packets)


def feed_all(aligner: TsAligner, pieces: list[bytes]) -> bytes:
    return b"".join(aligner.feed(piece) for piece in pieces)


def test_aligned_stream_passes_unchanged_whatever_the_datagram_sizes() -> None:
    stream = ts_packets(40)
    for size in (1316, 1456, 1, 188, 500):
        aligner = TsAligner()
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(aligner, pieces) == stream
        assert aligner.bytes_dropped == 0 and aligner.resyncs == 0


def test_garbage_before_the_first_sync_is_dropped() -> None:
    stream = ts_packets(10)
    garbage = b"\x00\x47\x12" + b"\x47" * 5 + bytes(range(200))  # stray 0x47s too
    aligner = TsAligner()
    assert feed_all(aligner, [garbage + stream[:600], stream[600:]]) == stream
    assert aligner.bytes_dropped == len(garbage)


def test_a_stream_starting_mid_packet_starts_at_the_next_packet() -> None:
    stream = ts_packets(12)
    aligner = TsAligner()
    assert aligner.feed(stream[100:1316]) == stream[188:1316]
    assert aligner.feed(stream[1316:]) == stream[1316:]
    assert aligner.bytes_dropped == 88


def test_a_loss_mid_stream_drops_the_spliced_packet_and_realigns() -> None:
    stream = ts_packets(30)
    # Datagrams of 1456 bytes (not whole packets); the second one never arrives.
    datagrams = [stream[i : i + 1456] for i in range(0, len(stream), 1456)]
    aligner = TsAligner()
    out = feed_all(aligner, [datagrams[0], *datagrams[2:]])
    packets = [out[i : i + 188] for i in range(0, len(out), 188)]
    assert len(out) % 188 == 0
    originals = {stream[i : i + 188] for i in range(0, len(stream), 188)}
    assert all(packet in originals for packet in packets)  # nothing spliced
    assert out.startswith(stream[: 7 * 188])  # up to the loss
    assert out.endswith(stream[-5 * 188 :])  # and again after it
    assert aligner.resyncs == 1


def test_unaligned_bytes_held_are_bounded() -> None:
    aligner = TsAligner()
    for _ in range(100):
        assert aligner.feed(b"\x47" + bytes(1455)) == b""
    assert len(aligner._buffer) < 4 * 188


# libsrt's statistics layout


def test_bstats_struct_matches_libsrt_1_5() -> None:
    """sizeof/offsetof as the C compiler gives them for libsrt 1.5.1's srt.h."""
    perf = libsrt.CBytePerfMon
    assert ctypes.sizeof(perf) == 496
    offsets = {
        "pktRecvTotal": 16,
        "pktRcvLossTotal": 28,
        "pktRetransTotal": 32,
        "pktRcvDropTotal": 68,
        "byteRecvTotal": 88,
        "pktRecv": 144,
        "pktRcvRetrans": 164,
        "mbpsRecvRate": 192,
        "usPktSndPeriod": 304,
        "msRTT": 328,
        "mbpsBandwidth": 336,
        "byteMSS": 360,
        "msRcvTsbPdDelay": 392,
        "pktReorderTolerance": 428,
        "pktSentUniqueTotal": 432,
        "pktRecvUniqueTotal": 440,
        "byteRecvUnique": 488,
    }
    assert {name: getattr(perf, name).offset for name in offsets} == offsets


def test_libsrt_errors_carry_its_message() -> None:
    libsrt.startup()
    try:
        assert libsrt.version().startswith("1.5.")
        with pytest.raises(libsrt.SrtError) as raised:
            libsrt.bstats(123_456)
        assert raised.value.code == libsrt.SRT_EINVSOCK
        assert "socket" in raised.value.message.lower()
    finally:
        libsrt.cleanup()
