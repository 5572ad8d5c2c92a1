"""Test helpers for ingest: publishers as subprocesses, a queue collector, a raw RTMP client."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from ingest.adapter import DecoderSession
from ingest.decode import LiveDecoder
from ingest.formats import amf0
from ingest.media import MediaQueue, SessionEnd, SessionStart
from ingest.rtmp import handshake, messages
from ingest.rtmp.chunk import ChunkReader, ChunkWriter
from ingest.rtmp.messages import Message
from ingest.session import PublishRefused, PublishRequest, PublishSession
from media.fanout import QueueClosed

PYAV_PUBLISHER = Path(__file__).with_name("pyav_publisher.py")


def fuzz_examples(default: int) -> int:
    """Hypothesis example count: ONAIR_FUZZ_EXAMPLES scales it (`make fuzz`)."""
    value = os.environ.get("ONAIR_FUZZ_EXAMPLES")
    return int(value) if value else default


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll `predicate` until true or raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def items_until_a_video_frame(queue: MediaQueue, within: float) -> list[Any]:
    """What the queue gives until its first video frame (no end of stream sent)."""
    got: list[Any] = []

    def a_video_frame() -> bool:
        item = queue.get(0.01)
        if item is not None:
            got.append(item)
        return any(isinstance(i, av.VideoFrame) for i in got)

    wait_until(a_video_frame, within, "the first video frame (no end of stream sent)")
    return got


async def async_wait_until(
    predicate: Callable[[], bool], within: float, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


# Publishers


def ffmpeg_publish_cmd(
    url: str,
    *,
    size: str = "320x240",
    rate: int = 30,
    seconds: float = 3,
    realtime: bool = False,
    extra: Sequence[str] = (),
    output: Sequence[str] | None = None,
) -> list[str]:
    """ffmpeg encoding testsrc2 + a sine tone (H.264 + AAC) and publishing to `url`."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *(["-re"] if realtime else []),
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "30",
        "-c:a",
        "aac",
        *extra,
        *(output if output is not None else ["-f", "flv", url]),
    ]


def pyav_publish_cmd(
    url: str, codec: str, width: int, height: int, fps: int, seconds: int
) -> list[str]:
    return [
        sys.executable,
        str(PYAV_PUBLISHER),
        url,
        codec,
        str(width),
        str(height),
        str(fps),
        str(seconds),
    ]


def gstreamer_publish_cmd(url: str, sink: str, frames: int = 90) -> list[str]:
    """gst-launch publishing H.264 (x264enc) + AAC (voaacenc) through `sink`."""
    audio_buffers = frames * 44100 // 30 // 1024 + 1
    return [
        "gst-launch-1.0",
        "-q",
        "-e",
        "videotestsrc",
        f"num-buffers={frames}",
        "!",
        "video/x-raw,width=320,height=240,framerate=30/1",
        "!",
        "x264enc",
        "key-int-max=30",
        "speed-preset=veryfast",
        "!",
        "h264parse",
        "!",
        "flvmux",
        "name=mux",
        "streamable=true",
        "!",
        sink,
        "sync=false",
        f"location={url}",
        "audiotestsrc",
        f"num-buffers={audio_buffers}",
        "samplesperbuffer=1024",
        "!",
        "audio/x-raw,rate=44100,channels=2",
        "!",
        "voaacenc",
        "!",
        "aacparse",
        "!",
        "mux.",
    ]


async def run_process(cmd: Sequence[str], within: float = 90) -> tuple[int, str]:
    """Run `cmd`; (exit code, stderr). Kills it and fails the test on timeout."""
    process = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        raise AssertionError(f"{cmd[0]} did not finish within {within}s") from None
    finally:  # also when the test fails or is cancelled meanwhile: no stray publisher
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


def decode_file_pts(path: Path) -> tuple[list[int], list[int]]:
    """(video pts, audio pts) of every frame PyAV decodes from a media file."""
    video: list[int] = []
    audio: list[int] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            for frame in packet.decode():
                assert isinstance(frame, av.VideoFrame | av.AudioFrame)
                assert frame.pts is not None
                (video if packet.stream.type == "video" else audio).append(frame.pts)
    return video, audio


# Consuming a MediaQueue


class Collector:
    """Drains a MediaQueue in a thread and records what came out (frames are not kept)."""

    def __init__(self, queue: MediaQueue) -> None:
        self.queue = queue
        self.events: list[tuple[Any, ...]] = []
        self.starts: list[SessionStart] = []
        self.ends: list[SessionEnd] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(0.1)
            except QueueClosed:
                return
            if item is None:
                continue
            with self._lock:
                if isinstance(item, SessionStart):
                    self.starts.append(item)
                    self.events.append(("start", item.session))
                elif isinstance(item, SessionEnd):
                    self.ends.append(item)
                    self.events.append(("end", item.session, item.reason))
                elif isinstance(item, av.VideoFrame):
                    self.events.append(("video", item.pts, item.width, item.height))
                elif isinstance(item, av.AudioFrame):
                    self.events.append(("audio", item.pts, item.sample_rate))
                else:
                    self.events.append(("packet", item.stream.type, item.pts, item.size))

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [e for e in self.events if e[0] == kind]

    def pts(self, kind: str) -> list[int]:
        return [e[1] for e in self.kinds(kind)]

    def wait_ends(self, count: int, timeout: float = 30) -> None:
        wait_until(lambda: len(self.ends) >= count, timeout, f"{count} SessionEnd")

    async def async_wait_ends(self, count: int, within: float = 30) -> None:
        await async_wait_until(lambda: len(self.ends) >= count, within, f"{count} SessionEnd")

    def stop(self) -> None:
        self.queue.close()
        self._thread.join(5)


# An admission policy for the tests, with one LiveDecoder per stream key


@dataclass
class Job:
    key: str
    queue: MediaQueue
    decoder: LiveDecoder
    collector: Collector
    media_calls: int = 0
    video_ex_header: bool = False  # a video payload had the enhanced-RTMP bit
    metadata: list[dict[str, Any]] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    requests: list[PublishRequest] = field(default_factory=list)


class _TrackedSession(PublishSession):
    def __init__(self, harness: Harness, job: Job, inner: DecoderSession) -> None:
        self.harness, self.job, self.inner = harness, job, inner

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        self.job.metadata.append(dict(metadata))
        self.inner.on_metadata(metadata)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        self.job.media_calls += 1
        if kind == 9 and payload and payload[0] & 0x80:
            self.job.video_ex_header = True
        self.inner.on_media(kind, timestamp_ms, payload)

    def on_data(self, data: bytes) -> None:
        self.inner.on_data(data)

    def wait_for_room(self) -> Awaitable[None] | None:
        return self.inner.wait_for_room()

    def on_close(self, reason: str) -> None:
        self.job.closes.append(reason)
        self.harness.publishing.discard(self.job.key)
        self.inner.on_close(reason)


class Harness:
    """Admits any key except `refused_keys`, and refuses a key already publishing."""

    def __init__(self, refused_keys: Sequence[str] = ()) -> None:
        self.refused_keys = set(refused_keys)
        self.jobs: dict[str, Job] = {}
        self.publishing: set[str] = set()
        self.requests: list[PublishRequest] = []
        self.refusals: list[str] = []

    def job(self, key: str) -> Job:
        if key not in self.jobs:
            queue = MediaQueue(max_items=100_000)
            self.jobs[key] = Job(key, queue, LiveDecoder(queue, label=key), Collector(queue))
        return self.jobs[key]

    async def admit(self, request: PublishRequest) -> PublishSession:
        self.requests.append(request)
        key = request.stream_key
        if key in self.refused_keys:
            self.refusals.append(key)
            raise PublishRefused("unknown stream key")
        if key in self.publishing:
            self.refusals.append(key)
            raise PublishRefused("stream key already publishing")
        job = self.job(key)
        job.requests.append(request)
        self.publishing.add(key)
        return _TrackedSession(self, job, DecoderSession(job.decoder, request))

    def close(self) -> None:
        for job in self.jobs.values():
            job.decoder.stop()
            job.collector.stop()


# A raw RTMP client for protocol-level and hostile tests


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
