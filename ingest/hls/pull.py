"""HLS pull ingest: onair fetches a job's HLS source and feeds its segments to the
decoder, in order, as a publisher's bytes (`serverType` 2 with `input.sourceUrl`).

Every request goes through the outbound guard (`media.outbound.OutboundClient`): the
source URL, each redirect hop, the variant and every segment URL have their address
checked, private addresses refused unless the policy allows them. A master playlist is
followed to its variant of the highest BANDWIDTH; the media playlist is then reloaded
as RFC 8216 §6.3.4 says (a target duration after a load that changed it, half of one
after a load that did not), and each segment not fed yet is fetched, once, by media
sequence. A live playlist is joined `LIVE_START_SEGMENTS` from its end; one with
EXT-X-ENDLIST from the start is pulled whole; EXT-X-ENDLIST seen later ends the session
once its last segment is fed.

A segment is fetched whole (within `max_segment_bytes`) before any of it is fed, so a
failed or retried fetch never feeds part of a segment twice; it is then fed in
`FEED_CHUNK_BYTES` slices, awaiting the session's `wait_for_room()` between them. At
most `MAX_QUEUED_SEGMENTS` segments are pending (a puller that falls further behind a
live source skips to its newest ones, saying so) and one segment's bytes are held.

Admission happens before the first segment's bytes are fed; a refusal is reported
(`SourceRefused`) and admission tried again with backoff, as onair's own refusals (a
job still finishing, a host at capacity) may clear. onair's side ends a session with
the request's callbacks:

- `close(reason)`: the session ends; the puller keeps running and admits a new session
  when there are new segments, as a publisher that reconnects would (onair stops the
  puller with `stop()` when the job goes offline);
- `reject(reason)`: the source itself is refused; the session ends and the puller stops.

Events (`on_event(name, description)`, on the loop): `SourceFailing` at the first
failure of a failing period ("GET <url without its query>: 404 Not Found"),
`SourceRecovered` when a playlist or segment is fetched again ("after 3 s"),
`SourceRefused` when admission refuses (once per refusal period), `SourceEnded` after
EXT-X-ENDLIST's last segment. A source failing longer than `give_up_seconds` (default
three target durations) loses its session ("source unavailable: ..."); the puller keeps
retrying and a new session starts when segments come again. URLs are logged without
their query strings: they may carry tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import m3u8
from yarl import URL

from ingest.session import (
    MPEGTS,
    PULL_APP,
    AdmitCallback,
    IngestProtocol,
    PublishRefused,
    PublishRequest,
    PublishSession,
)
from media.outbound import OutboundClient, OutboundError, OutboundPolicy, ResponseTooLarge
from media.outbound.guard import host_port

log = logging.getLogger(__name__)

LIVE_START_SEGMENTS = 3  # a live source is joined this many segments from its end
MAX_QUEUED_SEGMENTS = 10  # pending segments at most; further behind, skip ahead
SEGMENT_TRIES = 3  # a listed segment missing (404, 410) or too large this often: skipped
MAX_RETRY_SECONDS = 10.0
UNAVAILABLE_TARGET_DURATIONS = 3  # failing this many target durations ends the session
ROOM_TIMEOUT_SECONDS = 30.0  # a pipeline taking nothing this long counts as stuck
CLAIM_POLL_SECONDS = 2.0  # another host pulls the job: asked again this often
FEED_CHUNK_BYTES = 188 * 348  # ~64 KiB of whole TS packets
ENDED_REASON = "the source ended (EXT-X-ENDLIST)"
_DEFAULT_TARGET_SECONDS = 6.0


class SourceError(Exception):
    """A playlist or segment could not be had; the message names no query string."""

    def __init__(self, message: str, *, counted: bool = False) -> None:
        super().__init__(message)
        self.counted = counted  # a listed segment missing or too large: tries are counted


@dataclass(frozen=True)
class Segment:
    """One media segment of a media playlist."""

    sequence: int
    url: str
    duration_seconds: float
    discontinuity: bool


@dataclass(frozen=True)
class MediaPlaylist:
    """What the puller needs of a media playlist."""

    target_seconds: float
    segments: tuple[Segment, ...]
    ended: bool  # EXT-X-ENDLIST


def redacted(url: str | URL) -> str:
    """`url` without its credentials, query and fragment: what logs and events may say."""
    parsed = URL(url) if isinstance(url, str) else url
    with contextlib.suppress(ValueError):
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    return "a URL"


def parse_playlist(text: str, url: str) -> MediaPlaylist | list[tuple[int, str]]:
    """A media playlist, or a master's variants as `(bandwidth, url)`; `SourceError` else."""
    if not text.lstrip("\ufeff \r\n").startswith("#EXTM3U"):
        raise SourceError(f"{redacted(url)} is not an HLS playlist (no #EXTM3U)")
    try:
        playlist = m3u8.loads(text, uri=url)
    except Exception as exc:  # m3u8 raises plain ValueError, AttributeError, ...
        raise SourceError(f"{redacted(url)}: an unparsable playlist ({exc})") from None
    if playlist.is_variant:
        variants = [(v.stream_info.bandwidth or 0, v.absolute_uri) for v in playlist.playlists]
        if not variants:
            raise SourceError(f"{redacted(url)}: a master playlist without variants")
        return variants
    if playlist.target_duration is None:
        raise SourceError(f"{redacted(url)}: a media playlist without EXT-X-TARGETDURATION")
    for segment in playlist.segments:
        if segment.init_section is not None:
            raise SourceError(f"{redacted(url)}: fMP4 segments (EXT-X-MAP) are not supported")
        if segment.key is not None and (segment.key.method or "NONE").upper() != "NONE":
            raise SourceError(f"{redacted(url)}: encrypted segments are not supported")
    first = int(playlist.media_sequence or 0)
    segments = tuple(
        Segment(first + i, s.absolute_uri, float(s.duration or 0.0), bool(s.discontinuity))
        for i, s in enumerate(playlist.segments)
    )
    return MediaPlaylist(float(playlist.target_duration), segments, bool(playlist.is_endlist))


def best_variant(variants: list[tuple[int, str]]) -> str:
    """The URL of the variant of the highest BANDWIDTH (the first of equals)."""
    return max(variants, key=lambda variant: variant[0])[1]


def due_segments(
    playlist: MediaPlaylist, next_sequence: int | None, *, joining: bool, whole: bool
) -> list[Segment]:
    """The segments to fetch now: those from `next_sequence` on; a live source being
    joined (`joining`: no session yet) from `LIVE_START_SEGMENTS` before its end, one
    pulled `whole` (EXT-X-ENDLIST from the start) entirely; never over
    `MAX_QUEUED_SEGMENTS` of a live source (the newest kept)."""
    due = [s for s in playlist.segments if next_sequence is None or s.sequence >= next_sequence]
    if whole:
        return due
    if joining:
        return due[-LIVE_START_SEGMENTS:]
    return due[-MAX_QUEUED_SEGMENTS:]


class HlsPuller:
    """Pulls one HLS source for one live job (asyncio, on the loop).

    `admit` is onair's admit callback; `stream_key` the job's key; `source_url` the
    job's `input.sourceUrl` (http or https, a master or a media playlist); every request
    goes through `policy`. `on_event(name, description)` hears SourceFailing,
    SourceRecovered, SourceRefused and SourceEnded. `max_segment_bytes` bounds one
    segment (the playlist is bounded by `policy.max_response_bytes`); failures are
    retried after `retry_seconds`, doubling up to `MAX_RETRY_SECONDS`;
    `give_up_seconds` is how long a failing source keeps its session (None: three
    target durations). `label` names it in the log (the URL without its query if "").
    Counters: `segments_fed`, `segments_skipped`, `bytes_fed`.
    """

    def __init__(
        self,
        admit: AdmitCallback,
        *,
        stream_key: str,
        source_url: str,
        policy: OutboundPolicy,
        on_event: Callable[[str, str], None] | None = None,
        max_segment_bytes: int = 32 * 1024 * 1024,
        retry_seconds: float = 1.0,
        give_up_seconds: float | None = None,
        label: str = "",
        app: str = PULL_APP,
        claim: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """`claim()`: whether this host may pull the job now (several hosts sharing a
        store: only the one holding the job's lease, or any while nobody does); asked
        before each fetch while no session is open, every `CLAIM_POLL_SECONDS`."""
        self._admit = admit
        self._claim = claim
        self._app = app  # PULL_APP, or PULL_BACKUP_APP for a Standard job's backup source
        self._stream_key = stream_key
        self._source_url = source_url
        self._policy = policy
        self._on_event = on_event
        self._max_segment_bytes = max_segment_bytes
        self._retry_seconds = retry_seconds
        self._give_up_seconds = give_up_seconds
        source = URL(source_url)
        self._remote = host_port(source.raw_host or "", source.port or 0)
        self._prefix = f"[hls pull {label or redacted(source_url)}]"
        self._task: asyncio.Task[None] | None = None
        self._session: PublishSession | None = None
        self._target_seconds = _DEFAULT_TARGET_SECONDS
        self._next_sequence: int | None = None
        self._whole = False  # EXT-X-ENDLIST from the first load: pulled whole
        self._tries: dict[int, int] = {}
        self._failures = 0  # consecutive, for the backoff
        self._failing_since: float | None = None
        self._refused: str | None = None
        self._rejected = False
        self._rejected_reason = ""
        self.segments_fed = 0
        self.segments_skipped = 0  # missing, too large, or passed by the live window
        self.bytes_fed = 0

    @property
    def running(self) -> bool:
        """Whether the pulling task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start pulling; returns at once. Idempotent."""
        if self.running:
            return
        self._rejected = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._prefix)

    async def stop(self) -> None:
        """Stop pulling and wait for it; an open session gets `on_close("stopped")`."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._end_session("stopped")

    async def _run(self) -> None:
        try:
            async with OutboundClient(self._policy) as client:
                await self._pull(client)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s pulling failed", self._prefix)
            self._end_session("the HLS puller failed")
        finally:
            log.info(
                "%s stopped: %d segments fed (%d bytes), %d skipped",
                self._prefix,
                self.segments_fed,
                self.bytes_fed,
                self.segments_skipped,
            )

    async def _pull(self, client: OutboundClient) -> None:
        media_url: str | None = None
        while not self._rejected:
            if self._session is None and self._claim is not None and not await self._claim():
                media_url = None  # another host pulls the job: nothing fetched here
                await asyncio.sleep(CLAIM_POLL_SECONDS)
                continue
            started = time.monotonic()
            try:
                if media_url is None:
                    media_url, playlist = await self._media_playlist(client)
                    self._whole = self._next_sequence is None and playlist.ended
                else:
                    playlist = await self._load(client, media_url)
                self._target_seconds = playlist.target_seconds or _DEFAULT_TARGET_SECONDS
                self._follow(playlist)
                changed = await self._fetch_due(client, playlist)
                if self._rejected:
                    return
            except SourceError as exc:
                if await self._failed(exc):
                    media_url = None  # gave the session up: read the master again
                continue
            except PublishRefused as exc:
                await self._refusal(exc)
                continue
            if playlist.ended and self._caught_up(playlist):
                self._ended()
                return
            if not changed:
                self._succeeded()  # reloaded fine; the source has nothing new yet
            wait = self._target_seconds if changed else self._target_seconds / 2
            await asyncio.sleep(max(0.0, started + wait - time.monotonic()))

    async def _media_playlist(self, client: OutboundClient) -> tuple[str, MediaPlaylist]:
        parsed = parse_playlist(await self._text(client, self._source_url), self._source_url)
        if isinstance(parsed, MediaPlaylist):
            return self._source_url, parsed
        variant = best_variant(parsed)
        log.info("%s master playlist: pulling %s", self._prefix, redacted(variant))
        playlist = parse_playlist(await self._text(client, variant), variant)
        if not isinstance(playlist, MediaPlaylist):
            raise SourceError(f"{redacted(variant)}: a variant that is a master playlist")
        return variant, playlist

    async def _load(self, client: OutboundClient, url: str) -> MediaPlaylist:
        playlist = parse_playlist(await self._text(client, url), url)
        if not isinstance(playlist, MediaPlaylist):
            raise SourceError(f"{redacted(url)}: a master playlist where a media one was")
        return playlist

    async def _text(self, client: OutboundClient, url: str) -> str:
        body = await self._get(client, url, self._policy.max_response_bytes, counted=False)
        return body.decode("utf-8", errors="replace")

    async def _get(
        self, client: OutboundClient, url: str, max_bytes: int, *, counted: bool
    ) -> bytes:
        where = f"GET {redacted(url)}"
        try:
            response = await client.fetch(url, max_bytes=max_bytes)
        except ResponseTooLarge as exc:
            raise SourceError(f"{where}: {exc.reason}", counted=counted) from None
        except OutboundError as exc:
            raise SourceError(f"{where}: {exc}") from None
        if not 200 <= response.status < 300:
            try:
                phrase = HTTPStatus(response.status).phrase
            except ValueError:
                phrase = ""
            missing = counted and response.status in (404, 410)
            raise SourceError(f"{where}: {response.status} {phrase}".rstrip(), counted=missing)
        return response.body

    def _follow(self, playlist: MediaPlaylist) -> None:
        """Where the playlist's sequence stands against ours: a jump or a restart."""
        if self._next_sequence is None or not playlist.segments:
            return
        first, last = playlist.segments[0].sequence, playlist.segments[-1].sequence
        if last < self._next_sequence - 1 - LIVE_START_SEGMENTS:
            log.warning(
                "%s the media sequence went back from %d to %d: the source restarted",
                self._prefix,
                self._next_sequence,
                last,
            )
            self._next_sequence = None if self._session is None else first
        elif first > self._next_sequence:
            skipped = first - self._next_sequence
            self.segments_skipped += skipped
            log.warning(
                "%s %d segments left the window before they were fetched", self._prefix, skipped
            )
            self._next_sequence = first

    async def _fetch_due(self, client: OutboundClient, playlist: MediaPlaylist) -> bool:
        """Fetch and feed what is due; whether there was anything."""
        due = due_segments(
            playlist, self._next_sequence, joining=self._session is None, whole=self._whole
        )
        if due and self._next_sequence is not None and due[0].sequence > self._next_sequence:
            passed = due[0].sequence - self._next_sequence
            self.segments_skipped += passed
            log.warning("%s %d segments behind: skipped to the newest", self._prefix, passed)
        for segment in due:
            if self._rejected:
                break
            try:
                data = await self._get(client, segment.url, self._max_segment_bytes, counted=True)
            except SourceError as exc:
                if not exc.counted:
                    raise
                tries = self._tries.get(segment.sequence, 0) + 1
                self._tries[segment.sequence] = tries
                if tries < SEGMENT_TRIES:
                    raise
                log.warning(
                    "%s segment %d skipped after %d tries: %s",
                    self._prefix,
                    segment.sequence,
                    tries,
                    exc,
                )
                self.segments_skipped += 1
                self._advance(segment.sequence)
                continue
            if segment.discontinuity:
                log.info("%s discontinuity at segment %d", self._prefix, segment.sequence)
            await self._feed(data, segment.sequence)
            self.segments_fed += 1
            self._advance(segment.sequence)
            self._succeeded()
        return bool(due)

    def _advance(self, sequence: int) -> None:
        self._next_sequence = sequence + 1
        self._tries = {s: n for s, n in self._tries.items() if s > sequence}

    def _caught_up(self, playlist: MediaPlaylist) -> bool:
        if not playlist.segments or self._next_sequence is None:
            return True
        return self._next_sequence > playlist.segments[-1].sequence

    async def _feed(self, data: bytes, sequence: int) -> None:
        session = self._session
        if session is None:
            session = await self._open_session(sequence)
        for offset in range(0, len(data), FEED_CHUNK_BYTES):
            if self._session is not session:
                return  # onair ended it meanwhile
            chunk = data[offset : offset + FEED_CHUNK_BYTES]
            session.on_data(chunk)
            self.bytes_fed += len(chunk)
            if self._session is not session:
                return  # onair ended it from on_data
            room = session.wait_for_room()
            if room is not None:
                try:
                    await asyncio.wait_for(room, ROOM_TIMEOUT_SECONDS)
                except TimeoutError:
                    self._end_session(f"the pipeline took no media for {ROOM_TIMEOUT_SECONDS:g} s")
                    return

    async def _open_session(self, sequence: int) -> PublishSession:
        # A request's callbacks end their own session only, never a later one.
        opened: list[PublishSession] = []

        def close(reason: str) -> None:
            if opened and self._session is opened[0]:
                self._closed_by_onair(reason)

        def reject(reason: str) -> None:
            self._rejected_by_onair(reason, opened[0] if opened else None)

        request = PublishRequest(
            IngestProtocol.HLS,
            self._app,
            self._stream_key,
            self._remote,
            MPEGTS,
            close=close,
            reject=reject,
        )
        session = await self._admit(request)  # PublishRefused goes to _pull
        opened.append(session)
        if self._rejected:  # rejected from inside admit: never fed
            session.on_close(self._rejected_reason)
            return session
        self._session = session
        self._refused = None
        self._failures = 0
        log.info("%s admitted: feeding from segment %d", self._prefix, sequence)
        return session

    def _closed_by_onair(self, reason: str) -> None:
        log.info("%s closed by onair: %s", self._prefix, reason)
        self._end_session(reason)

    def _rejected_by_onair(self, reason: str, session: PublishSession | None) -> None:
        if self._rejected or (session is not None and self._session is not session):
            return  # an earlier session's request: that one has ended already
        log.info("%s rejected by onair, stopping: %s", self._prefix, reason)
        self._rejected, self._rejected_reason = True, reason
        self._end_session(reason)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _end_session(self, reason: str) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.on_close(reason)

    def _ended(self) -> None:
        log.info("%s the source ended after %d segments", self._prefix, self.segments_fed)
        self._end_session(ENDED_REASON)
        self._event("SourceEnded", f"EXT-X-ENDLIST after {self.segments_fed} segments")

    async def _failed(self, exc: SourceError) -> bool:
        """Report and back off; whether the session was given up."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.warning("%s %s", self._prefix, exc)
            self._event("SourceFailing", str(exc))
        else:
            log.debug("%s still failing: %s", self._prefix, exc)
        self._failures += 1
        given_up = False
        limit = self._give_up_seconds
        if limit is None:
            limit = UNAVAILABLE_TARGET_DURATIONS * self._target_seconds
        if self._session is not None and now - self._failing_since >= limit:
            self._end_session(f"source unavailable: {exc}")
            given_up = True
        delay = min(self._retry_seconds * 2 ** (self._failures - 1), MAX_RETRY_SECONDS)
        if self._session is not None:  # wake in time to give the session up
            delay = min(delay, max(0.0, self._failing_since + limit - now) + 0.01)
        await asyncio.sleep(delay)
        return given_up

    def _succeeded(self) -> None:
        self._failures = 0
        if self._failing_since is not None:
            seconds = time.monotonic() - self._failing_since
            self._failing_since = None
            log.info("%s the source works again after %.1f s", self._prefix, seconds)
            self._event("SourceRecovered", f"after {seconds:.0f} s")

    async def _refusal(self, exc: PublishRefused) -> None:
        if self._refused != exc.description:
            self._refused = exc.description
            log.warning("%s admission refused: %s", self._prefix, exc.description)
            self._event("SourceRefused", exc.description)
        self._failures += 1
        await asyncio.sleep(min(self._retry_seconds * 2 ** (self._failures - 1), MAX_RETRY_SECONDS))

    def _event(self, name: str, description: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(name, description)
        except Exception:
            log.exception("%s on_event(%s) failed", self._prefix, name)
