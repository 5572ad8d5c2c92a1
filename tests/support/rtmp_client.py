"""A raw RTMP client for protocol-level and hostile tests: it speaks RTMP with onair's
own codec, byte by byte under the test's control."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ingest.formats import amf0
from ingest.rtmp import handshake, messages
from ingest.rtmp.chunk import ChunkReader, ChunkWriter
from ingest.rtmp.messages import Message
from ingest.rtmp.server import RtmpServer

# The `start_server` fixture (tests/ingest/conftest.py): start_server(**options) -> a
# started RtmpServer on 127.0.0.1.
StartServer = Callable[..., Awaitable[RtmpServer]]


class RawClient:
    """Speaks RTMP with our own codec, byte by byte under the test's control."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.out = ChunkWriter()
        self.inp = ChunkReader()
        host, port = writer.get_extra_info("sockname")[:2]
        self.local = f"{host}:{port}"
        self.prefix = f"[rtmp {self.local}]"
        self.sent_bytes = 0  # chunk stream bytes sent after the handshake

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def handshake(self) -> None:
        self.writer.write(handshake.client_c0c1())
        s1, _ = handshake.parse_s0s1s2(await self.reader.readexactly(handshake.S0S1S2_SIZE))
        self.writer.write(handshake.client_c2(s1))
        await self.writer.drain()

    def send(self, csid: int, message: Message) -> None:
        data = self.out.write(csid, message)
        self.sent_bytes += len(data)
        self.writer.write(data)

    def command(self, name: str, txn: float, obj: Any, *args: Any, stream_id: int = 0) -> None:
        self.send(3, messages.command(name, txn, obj, *args, stream_id=stream_id))

    async def read_message(self, within: float = 5) -> Message:
        async with asyncio.timeout(within):
            while True:
                message = self.inp.next_message()
                if message is not None:
                    return message
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("server closed the connection")
                self.inp.feed(data)

    async def read_command(self, within: float = 5) -> messages.Command:
        """The next command message, skipping control messages."""
        while True:
            message = await self.read_message(within)
            if message.type_id == messages.COMMAND_AMF0:
                return messages.parse_command(message)

    async def publish(self, key: str, app: str = "live") -> messages.Command:
        """connect/createStream/publish; returns the publish onStatus command."""
        self.command("connect", 1, {"app": app, "tcUrl": f"rtmp://127.0.0.1/{app}"})
        assert (await self.read_command()).name == "_result"
        self.command("createStream", 2, None)
        assert (await self.read_command()).name == "_result"
        self.command("publish", 3, None, key, "live", stream_id=1)
        return await self.read_command()

    async def wait_closed(self, within: float = 10) -> None:
        """Read until the server closes the connection (EOF or reset)."""
        async with asyncio.timeout(within):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass

    def close(self) -> None:
        self.writer.transport.abort()


def amf_command(name: str, txn: float, *args: Any) -> bytes:
    return amf0.encode(name, float(txn), *args)


def status_info(command: messages.Command) -> dict[str, Any]:
    assert command.name == "onStatus"
    info = command.args[0]
    assert isinstance(info, dict)
    return info
