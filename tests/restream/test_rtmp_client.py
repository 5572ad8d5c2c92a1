"""The outbound RTMP publisher against real peers: nginx-rtmp (recording, on_publish,
an RTMPS front) and raw socket servers that misbehave on purpose (never read, never
answer, refuse with a message naming the key)."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from ingest.formats import flv
from ingest.rtmp import handshake, messages
from ingest.rtmp.chunk import ChunkReader, ChunkWriter
from ingest.rtmp.messages import Message
from media.outbound import OutboundPolicy, OutboundRefused
from restream.redact import display_url, redact, redact_key
from restream.rtmp_client import (
    RtmpAddressRefused,
    RtmpError,
    RtmpFailed,
    RtmpPublisher,
    RtmpRefused,
    split_stream_url,
)
from tests.support.media import ffmpeg_warnings, make_source
from tests.support.nginx import NginxRtmp
from tests.support.ports import free_port
from tests.support.waiting import wait_until

KEY = "live_s3cr3t=KEY+0123456789abcdef"  # "=" and "+": its URL-encoded forms differ
KEY_FORMS = (KEY, quote(KEY, safe=""), quote(KEY), "s3cr3t")
LOCAL = OutboundPolicy(allow_private=True)


def assert_redacted(text: str) -> None:
    for form in KEY_FORMS:
        assert form not in text


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_redacted(caplog.text)


# Redaction


def test_redact_key_shows_three_characters_at_each_end() -> None:
    assert redact_key("sec-0123456789-k3y") == "{sec…k3y}"
    assert redact_key("123456789") == "{123…789}"
    assert redact_key("12345678") == "{…}"
    assert redact_key("") == "{…}"


def test_redact_replaces_plain_and_url_encoded_forms() -> None:
    text = f"publish {KEY} failed; url rtmp://h/app/{quote(KEY, safe='')} or {quote(KEY)}"
    redacted = redact(text, KEY)
    assert_redacted(redacted)
    assert redacted.count("{liv…def}") == 3
    assert redact("nothing here", "") == "nothing here"
    # nginx-rtmp strips a ?query from the name: the part before it is redacted too.
    assert redact("name='abcdefghijk'", "abcdefghijk?bandwidthtest=true") == "name='{abc…rue}'"


def test_display_url() -> None:
    assert display_url("rtmp://a.rtmp.youtube.com/live2", KEY) == (
        "rtmp://a.rtmp.youtube.com/live2/{liv…def}"
    )
    assert display_url("rtmps://live-api-s.facebook.com:443/rtmp/", "short") == (
        "rtmps://live-api-s.facebook.com:443/rtmp/{…}"
    )
    assert display_url("rtmp://user:pw@host/app", KEY) == "rtmp://host/app/{liv…def}"


def test_split_stream_url_of_the_platforms() -> None:
    assert split_stream_url("rtmp://a.rtmp.youtube.com/live2") == (
        "rtmp",
        "a.rtmp.youtube.com",
        1935,
        "live2",
    )
    assert split_stream_url("rtmp://live.twitch.tv/app") == ("rtmp", "live.twitch.tv", 1935, "app")
    assert split_stream_url("rtmps://live-api-s.facebook.com:443/rtmp/") == (
        "rtmps",
        "live-api-s.facebook.com",
        443,
        "rtmp",
    )
    assert split_stream_url("rtmps://h/a/b/") == ("rtmps", "h", 443, "a/b")
    for bad in ("http://h/app", "rtmp://h", "rtmp://h/", "rtmp:///app"):
        with pytest.raises(ValueError):
            split_stream_url(bad)


# Against nginx-rtmp


@dataclass(frozen=True)
class Source:
    path: Path
    tags: list[flv.Tag]
    frames: dict[str, int]  # codec_type -> frames ffprobe counts


def frame_counts(path: Path) -> dict[str, int]:
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-count_frames", "-of", "csv=p=0"),
            *("-show_entries", "stream=codec_type,nb_read_frames", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return {kind: int(count) for kind, count in (line.split(",") for line in out.split())}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """5 s of testsrc2 320x180 30 fps + sine AAC as FLV, and its tags."""
    path = make_source(tmp_path_factory.mktemp("source") / "source.flv", 320, 180, 5)
    _, tags = flv.parse(path.read_bytes())
    frames = frame_counts(path)
    assert frames["video"] == 150 and frames["audio"] > 200
    return Source(path, tags, frames)


def assert_recorded(nginx: NginxRtmp, app: str, key: str, source: Source) -> None:
    recording = nginx.recording(app, key)
    # nginx writes the file as the tags arrive; the last ones land as it sees the close.
    wait_until(
        lambda: recording.exists() and frame_counts(recording) == source.frames,
        timeout_seconds=10,
        what=f"every frame in {recording.name}",
    )
    assert ffmpeg_warnings(recording) == ""


def test_publish_records_every_frame(nginx: NginxRtmp, source: Source) -> None:
    publisher = RtmpPublisher.connect(nginx.rtmp_url("live1"), KEY, LOCAL)
    with publisher:
        publisher.send_tags(source.tags)
        assert publisher.buffered_bytes == 0
        assert publisher.bytes_sent > source.path.stat().st_size
    assert_recorded(nginx, "live1", KEY, source)
    assert "connect: app='live1'" in nginx.error_log_text()
    publisher.close()  # idempotent
    with pytest.raises(RtmpFailed, match="closed"):
        publisher.send(flv.TAG_VIDEO, 0, b"\x17\x01")


def test_key_with_query_is_passed_through(nginx: NginxRtmp, source: Source) -> None:
    key = "abcdef0123456789?bandwidthtest=false"
    with RtmpPublisher.connect(nginx.rtmp_url("live2"), key, LOCAL) as publisher:
        publisher.send_tags(source.tags)
    assert_recorded(nginx, "live2", key, source)
    assert "args='bandwidthtest=false'" in nginx.error_log_text()


def test_rtmps_through_the_tls_front(nginx: NginxRtmp, source: Source) -> None:
    policy = OutboundPolicy(allow_private=True, ca_file=nginx.ca_file)
    with RtmpPublisher.connect(nginx.rtmps_url("live2"), KEY, policy) as publisher:
        publisher.send_tags(source.tags)
    assert_recorded(nginx, "live2", KEY, source)


def test_rtmps_without_the_ca_is_a_certificate_error(nginx: NginxRtmp) -> None:
    with pytest.raises(RtmpFailed, match="TLS certificate error") as caught:
        RtmpPublisher.connect(nginx.rtmps_url("live2"), KEY, LOCAL)
    assert_redacted(str(caught.value))
    assert not nginx.recording("live2", KEY).exists()


def test_rtmps_checks_the_host_name(nginx: NginxRtmp, tmp_path: Path) -> None:
    policy = OutboundPolicy(allow_private=True, ca_file=nginx.ca_file)
    # The certificate names 127.0.0.1 and localhost, not 127.0.0.2 (still loopback).
    with pytest.raises(RtmpFailed, match="TLS certificate error"):
        RtmpPublisher.connect(f"rtmps://127.0.0.2:{nginx.rtmps_port}/live2", KEY, policy)


def test_unknown_application_is_refused(nginx: NginxRtmp) -> None:
    with pytest.raises(RtmpRefused, match="closed after connect") as caught:
        RtmpPublisher.connect(nginx.rtmp_url("nope"), KEY, LOCAL)
    assert_redacted(str(caught.value))
    assert "application not found" in nginx.error_log_text()


def test_refused_on_publish_is_refused(nginx: NginxRtmp) -> None:
    with pytest.raises(RtmpRefused, match="closed after publish") as caught:
        RtmpPublisher.connect(nginx.rtmp_url("guarded"), KEY, LOCAL)
    assert_redacted(str(caught.value))
    assert "notify: publish" in nginx.error_log_text()


def test_destination_going_away_mid_live_fails_then_restarts(
    nginx: NginxRtmp, source: Source
) -> None:
    publisher = RtmpPublisher.connect(nginx.rtmp_url("live1"), KEY, LOCAL, stall_seconds=2)
    with publisher:
        publisher.send_tags(source.tags[:100])
        nginx.stop()
        deadline = time.monotonic() + 5
        with pytest.raises(RtmpFailed) as caught:
            for tag in source.tags[100:] * 50:
                publisher.send(tag.kind, tag.timestamp_ms, tag.payload)
                publisher.flush()
                assert time.monotonic() < deadline
        assert_redacted(str(caught.value))
    nginx.restart()
    with RtmpPublisher.connect(nginx.rtmp_url("live2"), KEY, LOCAL) as again:
        again.send_tags(source.tags)
    assert_recorded(nginx, "live2", KEY, source)


# Connect failures


def test_nothing_listening_fails() -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live"
    with pytest.raises(RtmpFailed, match="connection refused") as caught:
        RtmpPublisher.connect(url, KEY, LOCAL)
    assert_redacted(str(caught.value))


def test_private_addresses_are_refused_by_the_guard() -> None:
    """Decision: the guard's refusal is an `RtmpAddressRefused` (an `RtmpFailed`, so one
    `except RtmpError` covers a publish) with the `OutboundRefused` as its cause."""
    with pytest.raises(RtmpAddressRefused, match="private") as caught:
        RtmpPublisher.connect("rtmp://10.1.2.3/live", KEY, OutboundPolicy())
    assert isinstance(caught.value, RtmpFailed)
    assert isinstance(caught.value.__cause__, OutboundRefused)
    assert_redacted(str(caught.value))
    # Loopback: nothing even connects.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0)
        port = listener.getsockname()[1]
        with pytest.raises(RtmpAddressRefused, match="loopback"):
            RtmpPublisher.connect(f"rtmp://127.0.0.1:{port}/live", KEY, OutboundPolicy())
        with pytest.raises(BlockingIOError):
            listener.accept()


# Misbehaving servers


class FakeServer:
    """A raw RTMP server on a thread, for one client: it answers the publish sequence
    as told, sends `after_start`, then either keeps reading or never reads again."""

    def __init__(
        self,
        *,
        answer: bool = True,
        connect_error: str | None = None,
        publish_status: tuple[str, str, str] = ("status", "NetStream.Publish.Start", "ok"),
        after_start: tuple[tuple[int, Message], ...] = (),
        keep_reading: bool = False,
        receive_buffer_bytes: int | None = None,
    ) -> None:
        self.answer, self.connect_error = answer, connect_error
        self.publish_status, self.after_start = publish_status, after_start
        self.keep_reading = keep_reading
        self.received: list[Message] = []
        self.listener = socket.socket()
        if receive_buffer_bytes is not None:  # accepted sockets inherit it
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def url(self, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    self._serve(conn)
                except (OSError, EOFError):
                    pass
            return

    def _recv(self, conn: socket.socket, size: int) -> bytes:
        data = bytearray()
        while len(data) < size and not self._stop.is_set():
            try:
                chunk = conn.recv(size - len(data))
            except TimeoutError:
                continue
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        if not self.answer:
            self._stop.wait()
            return
        c1 = handshake.parse_c0c1(self._recv(conn, handshake.C0C1_SIZE))
        conn.sendall(handshake.server_response(c1))
        self._recv(conn, handshake.HANDSHAKE_SIZE)
        reader, writer = ChunkReader(), ChunkWriter()
        started = False
        while not self._stop.is_set() and (not started or self.keep_reading):
            message = reader.next_message()
            if message is None:
                reader.feed(self._recv(conn, 1))
                continue
            self.received.append(message)
            if message.type_id != messages.COMMAND_AMF0:
                continue
            command = messages.parse_command(message)
            txn = command.transaction_id
            if command.name == "connect" and self.connect_error is not None:
                error = messages.error_result(
                    txn, self.connect_error, "NetConnection.Connect.Rejected"
                )
                conn.sendall(writer.write(3, error))
            elif command.name == "connect":
                conn.sendall(writer.write(3, messages.connect_result(txn)))
            elif command.name == "createStream":
                conn.sendall(writer.write(3, messages.result(txn, None, 1.0)))
            elif command.name == "publish":
                conn.sendall(writer.write(5, messages.on_status(1, *self.publish_status)))
                for csid, extra in self.after_start:
                    conn.sendall(writer.write(csid, extra))
                started = True
        self._stop.wait()


@pytest.fixture
def fake_server() -> Iterator[type[FakeServer]]:
    servers: list[FakeServer] = []

    class Started(FakeServer):
        def __init__(self, **options: object) -> None:
            super().__init__(**options)  # type: ignore[arg-type]
            servers.append(self)

    yield Started
    for server in servers:
        server.close()


def test_refusal_carries_the_servers_words_without_the_key(
    fake_server: type[FakeServer],
) -> None:
    status = ("error", "NetStream.Publish.BadName", f"stream {KEY} is already publishing")
    server = fake_server(publish_status=status)
    with pytest.raises(RtmpRefused, match=r"NetStream\.Publish\.BadName") as caught:
        RtmpPublisher.connect(server.url(), KEY, LOCAL)
    assert "is already publishing" in str(caught.value)
    assert_redacted(str(caught.value))
    publish = messages.parse_command(server.received[-1])
    assert (publish.name, publish.args) == ("publish", [KEY, "live"])


def test_connect_error_is_refused(fake_server: type[FakeServer]) -> None:
    server = fake_server(connect_error=f"no such app for {KEY}")
    rejected = r"NetConnection\.Connect\.Rejected: no such app"
    with pytest.raises(RtmpRefused, match=rejected) as caught:
        RtmpPublisher.connect(server.url("app/inst"), KEY, LOCAL)
    assert_redacted(str(caught.value))
    set_chunk_size, connect = server.received[:2]
    assert messages.parse_chunk_size(set_chunk_size.payload) == 4096
    command = messages.parse_command(connect)
    assert command.command_object == {
        "app": "app/inst",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; onair)",
        "tcUrl": server.url("app/inst"),
        "swfUrl": server.url("app/inst"),
    }


def test_answers_pings_and_acknowledges(fake_server: type[FakeServer]) -> None:
    padding = messages.on_status(1, "status", "NetStream.Info", "x" * 200)
    after_start = (
        (2, messages.window_ack_size(100)),
        (2, messages.user_control(messages.PING_REQUEST, 4242)),
        (5, padding),
    )
    server = fake_server(after_start=after_start, keep_reading=True)

    def answered() -> bool:
        publisher.send(flv.TAG_AUDIO, 0, b"\xaf\x01\x00")
        publisher.flush()
        types = {m.type_id for m in server.received}
        return messages.ACKNOWLEDGEMENT in types and messages.USER_CONTROL in types

    with RtmpPublisher.connect(server.url(), KEY, LOCAL) as publisher:
        wait_until(answered, timeout_seconds=5, what="a pong and an acknowledgement")
    pong = next(m for m in server.received if m.type_id == messages.USER_CONTROL)
    assert messages.parse_user_control(pong.payload) == (messages.PING_RESPONSE, 4242)
    audio = next(m for m in server.received if m.type_id == messages.AUDIO)
    assert audio.stream_id == 1


def test_metadata_goes_out_as_set_data_frame(fake_server: type[FakeServer], source: Source) -> None:
    server = fake_server(keep_reading=True)
    with RtmpPublisher.connect(server.url(), KEY, LOCAL) as publisher:
        publisher.send_tags(source.tags[:3])
        wait_until(lambda: any(m.type_id == 18 for m in server.received), timeout_seconds=5)
    data = next(m for m in server.received if m.type_id == messages.DATA_AMF0)
    values = messages.parse_data(data)
    assert values[:2] == ["@setDataFrame", "onMetaData"] and values[2]["width"] == 320


def test_error_status_after_the_start_is_raised_on_flush(
    fake_server: type[FakeServer],
) -> None:
    error = messages.on_status(1, "error", "NetStream.Publish.Rejected", "kicked")
    server = fake_server(after_start=((5, error),), keep_reading=True)
    with RtmpPublisher.connect(server.url(), KEY, LOCAL) as publisher:
        deadline = time.monotonic() + 5  # until the status has arrived
        with pytest.raises(RtmpRefused, match=r"NetStream\.Publish\.Rejected: kicked"):
            while time.monotonic() < deadline:
                publisher.flush()


@pytest.mark.slow  # waits out stall_seconds
def test_a_destination_that_stops_reading_stalls_the_send(
    fake_server: type[FakeServer],
) -> None:
    server = fake_server(receive_buffer_bytes=4096)
    publisher = RtmpPublisher.connect(server.url(), KEY, LOCAL, stall_seconds=1.0)
    payload = bytes(64 * 1024)
    started = time.monotonic()
    with publisher, pytest.raises(RtmpFailed, match="stalled: the destination stopped reading"):
        for n in range(4000):  # 256 MB at most: far more than any socket buffers
            publisher.send(flv.TAG_VIDEO, n * 33, payload)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 3.0
    assert publisher.bytes_sent < 100 * 1024 * 1024


@pytest.mark.slow  # waits out timeout_seconds
def test_a_server_that_never_answers_times_out(fake_server: type[FakeServer]) -> None:
    server = fake_server(answer=False)
    started = time.monotonic()
    with pytest.raises(RtmpFailed, match="timed out") as caught:
        RtmpPublisher.connect(server.url(), KEY, LOCAL, timeout_seconds=1.0)
    assert time.monotonic() - started < 1.0 + 1.0
    assert_redacted(str(caught.value))


def test_messages_never_hold_the_key() -> None:
    """Every error of a failed connect names the destination with the key redacted."""
    for error in (RtmpError, RtmpFailed, RtmpRefused):
        assert issubclass(error, RtmpError)
    with pytest.raises(RtmpFailed) as caught:
        RtmpPublisher.connect(f"rtmp://127.0.0.1:{free_port()}/live", KEY, LOCAL)
    assert "/live/{liv…def}" in str(caught.value)
