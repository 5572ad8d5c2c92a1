"""The server's side of the conversation, checked message by message with a raw client."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import pytest

from ingest.formats import amf0
from ingest.rtmp import messages
from ingest.rtmp.messages import Message
from ingest.session import FLV, IngestProtocol, PublishRefused, PublishRequest, PublishSession
from tests.support.rtmp_client import RawClient, StartServer, status_info
from tests.support.waiting import async_wait_until

SERVER_LOGGER = "ingest.rtmp.server"


class Recorder(PublishSession):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        self.calls.append(("metadata", metadata))

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        self.calls.append(("media", kind, timestamp_ms, payload))

    def on_data(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def on_close(self, reason: str) -> None:
        self.calls.append(("close", reason))

    def media(self) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == "media"]

    def closes(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "close"]


class RecordingAdmit:
    def __init__(self, refuse: Exception | None = None) -> None:
        self.refuse = refuse
        self.requests: list[PublishRequest] = []
        self.sessions: list[Recorder] = []

    async def __call__(self, request: PublishRequest) -> PublishSession:
        self.requests.append(request)
        if self.refuse is not None:
            raise self.refuse
        session = Recorder()
        self.sessions.append(session)
        return session


async def test_publish_conversation(start_server: StartServer) -> None:
    admit = RecordingAdmit()
    server = await start_server(admit=admit)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        app = {"app": "live/", "tcUrl": f"rtmp://127.0.0.1:{server.port}/live", "flashVer": "x"}
        client.command("connect", 1, app)
        assert await client.read_message() == messages.window_ack_size(2_500_000)
        assert await client.read_message() == messages.set_peer_bandwidth(2_500_000, 2)
        assert await client.read_message() == messages.set_chunk_size(4096)
        assert client.inp.chunk_size == 4096
        result = messages.parse_command(await client.read_message())
        assert (result.name, result.transaction_id) == ("_result", 1.0)
        assert result.args[0]["code"] == "NetConnection.Connect.Success"

        client.command("releaseStream", 2, None, "key")
        client.command("FCPublish", 3, None, "key")
        client.command("createStream", 4, None)
        for txn in (2, 3):
            answer = await client.read_command()
            assert (answer.name, answer.transaction_id) == ("_result", txn)
        created = await client.read_command()
        assert (created.name, created.transaction_id, created.args) == ("_result", 4.0, [1.0])

        client.send(4, Message(8, 1, 0, b"\xaf\x01early"))  # before publish: ignored
        client.command("publish", 5, None, "key?token=abc", "live", stream_id=1)
        assert await client.read_message() == messages.stream_begin(1)
        started = await client.read_message()
        assert (started.type_id, started.stream_id) == (20, 1)
        assert status_info(messages.parse_command(started))["code"] == "NetStream.Publish.Start"

        [request] = admit.requests
        assert (request.app, request.stream_key, request.remote) == ("live", "key", client.local)
        assert request.url == app["tcUrl"]
        assert (request.protocol, request.container) == (IngestProtocol.RTMP, FLV)

        metadata = amf0.EcmaArray(width=640.0, encoder="raw")
        client.send(4, Message(18, 1, 0, amf0.encode("@setDataFrame", "onMetaData", metadata)))
        sent = [
            (9, 0, b"\x17\x00config"),
            (8, 0, b"\xaf\x00\x11\x90"),
            (9, 33, b"\x27\x01" + bytes(300)),  # several chunks
            (8, 21, b"\xaf\x01aa"),
            (8, 42, b"\xaf\x01bb"),  # type 3 new message: same delta
            (8, 63, b"\xaf\x01cc"),
            (9, 0x1_0000_0000 - 5, b"\x27\x01wrap"),  # extended timestamp field
            (9, 17_000_000, b"\x27\x01" + bytes(5000)),  # extended, continuation chunks
        ]
        for kind, ts, payload in sent:
            client.send(6 if kind == 9 else 4, Message(kind, 1, ts, payload))
        units = b""
        for kind, ts, payload in [(8, 1000, b"\xaf\x01agg1"), (9, 1010, b"\x27\x01agg2")]:
            units += bytes([kind]) + len(payload).to_bytes(3, "big") + ts.to_bytes(3, "big")
            units += b"\x00\x00\x00\x00" + payload + struct.pack(">I", 11 + len(payload))
        client.send(7, Message(22, 1, 17_000_100, units))
        await async_wait_until(lambda: len(admit.sessions[0].media()) == 10, 5, "media")
        session = admit.sessions[0]
        assert session.calls[0] == ("metadata", {"width": 640.0, "encoder": "raw"})
        assert session.media() == [
            *sent,
            (8, 17_000_100, b"\xaf\x01agg1"),
            (9, 17_000_110, b"\x27\x01agg2"),
        ]

        client.send(2, messages.user_control(messages.PING_REQUEST, 1234))
        pong = await client.read_message()
        assert pong == messages.user_control(messages.PING_RESPONSE, 1234)

        client.command("noSuchCommand", 9, None)
        error = await client.read_command()
        assert (error.name, error.transaction_id) == ("_error", 9.0)

        client.command("FCUnpublish", 10, None, "key")
        client.command("deleteStream", 11, None, 1.0)
        assert (await client.read_command()).name == "_result"
        await async_wait_until(lambda: bool(session.closes()), 5, "on_close")
        client.close()
        await async_wait_until(lambda: server.connection_count == 0, 5, "the connection to end")
        assert session.closes() == ["unpublished"]
        assert session.calls[-1] == ("close", "unpublished")
    finally:
        client.close()


async def test_acknowledgement_at_the_window_the_peer_set(start_server: StartServer) -> None:
    admit = RecordingAdmit()
    server = await start_server(admit=admit)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        client.send(2, messages.window_ack_size(5000))
        status = await client.publish("ack")
        assert status_info(status)["code"] == "NetStream.Publish.Start"
        ack = None
        for i in range(20):
            client.send(4, Message(8, 1, i * 20, bytes(1000)))
            await client.writer.drain()
            while ack is None:
                try:
                    message = await client.read_message(within=0.2)
                except TimeoutError:
                    break
                if message.type_id == messages.ACKNOWLEDGEMENT:
                    ack = struct.unpack(">I", message.payload)[0]
            if ack is not None:
                break
        assert ack is not None
        assert 5000 <= ack <= client.sent_bytes < 5000 + 2 * 1100 + 200  # a prompt ack
    finally:
        client.close()


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        (HTTPStatus.FORBIDDEN, "NetStream.Publish.BadName"),
        (HTTPStatus.CONFLICT, "NetStream.Publish.BadName"),
        (HTTPStatus.SERVICE_UNAVAILABLE, "NetStream.Publish.Failed"),
    ],
)
async def test_refusal_sends_error_status_then_closes(
    start_server: StartServer, refusal: HTTPStatus, code: str
) -> None:
    """A neutral refusal (an HTTP status) is told as RTMP says it: onStatus error."""
    admit = RecordingAdmit(refuse=PublishRefused("key revoked", refusal))
    server = await start_server(admit=admit)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        status = await client.publish("k")
        assert status_info(status) == {
            "level": "error",
            "code": code,
            "description": "key revoked",
        }
        client.send(4, Message(8, 1, 0, b"\xaf\x01x"))
        await client.wait_closed()
        assert admit.sessions == []
    finally:
        client.close()


async def test_admission_crash_refuses_with_publish_failed(start_server: StartServer) -> None:
    admit = RecordingAdmit(refuse=RuntimeError("database down"))
    server = await start_server(admit=admit)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        info = status_info(await client.publish("k"))
        assert (info["level"], info["code"]) == ("error", "NetStream.Publish.Failed")
        await client.wait_closed()
    finally:
        client.close()


async def test_publish_timeout(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOGGER)
    server = await start_server(publish_timeout_seconds=0.5, idle_timeout_seconds=30)
    client = await RawClient.connect(server.port)
    silent = await RawClient.connect(server.port)  # not even a handshake
    try:
        await client.handshake()
        client.command("connect", 1, {"app": "live"})
        started = time.monotonic()
        await client.wait_closed()
        await silent.wait_closed()
        assert 0.3 < time.monotonic() - started < 5
        lines = [r.getMessage() for r in caplog.records if client.prefix in r.getMessage()]
        assert lines == [f"{client.prefix} closed: no publish within 0.5 s"]
    finally:
        client.close()
        silent.close()


async def test_idle_publisher_is_closed_and_its_session_ends(start_server: StartServer) -> None:
    admit = RecordingAdmit()
    server = await start_server(admit=admit, idle_timeout_seconds=0.5)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        await client.publish("idle")
        client.send(4, Message(8, 1, 0, b"\xaf\x01x"))
        await client.wait_closed()
        assert admit.sessions[0].calls == [
            ("media", 8, 0, b"\xaf\x01x"),
            ("close", "idle for 0.5 s"),
        ]
    finally:
        client.close()


async def test_request_close_drops_the_connection(start_server: StartServer) -> None:
    admit = RecordingAdmit()
    server = await start_server(admit=admit)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        await client.publish("kick")
        admit.requests[0].close("kicked by operator")
        await client.wait_closed()
        assert admit.sessions[0].closes() == ["kicked by operator"]
    finally:
        client.close()


async def test_stop_closes_every_connection_and_is_idempotent(start_server: StartServer) -> None:
    admit = RecordingAdmit()
    server = await start_server(admit=admit)
    publishers = [await RawClient.connect(server.port) for _ in range(3)]
    idle = await RawClient.connect(server.port)
    try:
        for i, client in enumerate(publishers):
            await client.handshake()
            await client.publish(f"k{i}")
        await server.stop()
        await server.stop()
        for client in [*publishers, idle]:
            await client.wait_closed(within=2)
        assert [s.closes() for s in admit.sessions] == [["server stopping"]] * 3
        assert server.connection_count == 0
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)
    finally:
        for client in [*publishers, idle]:
            client.close()


async def test_a_stream_rejected_after_publish_gets_an_error_status(
    start_server: StartServer,
) -> None:
    """The source turns out to be refused (too large): the publisher is told why."""
    admit = RecordingAdmit()
    server = await start_server(admit=admit)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        started = status_info(await client.publish("key"))
        assert started["code"] == "NetStream.Publish.Start"
        admit.requests[0].reject("source is 3840x2160, above the 2073600-pixel limit")
        info = status_info(await client.read_command())
        assert (info["level"], info["code"]) == ("error", "NetStream.Publish.Rejected")
        assert info["description"].startswith("source is 3840x2160")
        await client.wait_closed()
        await async_wait_until(lambda: bool(admit.sessions[0].closes()), 5)
        assert "rejected" in admit.sessions[0].closes()[0]
    finally:
        client.close()
