"""Where a live job's objects live in its bucket: pure functions, shared by API and packager.

{destination}/{filePath}/master.m3u8            master: the live (index.m3u8) while it runs,
                                                the whole recording (event.m3u8) once it ended
{destination}/{filePath}/dvr.m3u8               DVR master (the renditions' dvr.m3u8)
{destination}/{filePath}/{rendition}/index.m3u8 live playlist (sliding window of a few segments)
{destination}/{filePath}/{rendition}/dvr.m3u8   DVR playlist (window of ONAIR_DVR_WINDOW_SECONDS)
{destination}/{filePath}/{rendition}/parts/part_000003.m3u8
                                                the recording, an hour at most per part, in
                                                order from part_000000 (written as it grows)
{destination}/{filePath}/{rendition}/event.m3u8 the whole recording (written when a live ends)
{destination}/{filePath}/{rendition}/seg_000042.ts
"""

from __future__ import annotations

import re

MASTER_NAME = "master.m3u8"
DVR_MASTER_NAME = "dvr.m3u8"
LIVE_PLAYLIST_NAME = "index.m3u8"
DVR_PLAYLIST_NAME = "dvr.m3u8"
EVENT_PLAYLIST_NAME = "event.m3u8"
PARTS_FOLDER = "parts"
PART_URI_PREFIX = "../"  # from a part playlist to the rendition's segments


def object_prefix(destination: str, file_path: str) -> str:
    """The key prefix of a job; both parts were validated (no `..`, not absolute)."""
    parts = [p.strip("/") for p in (destination, file_path) if p and p.strip("/")]
    return "/".join(parts)


def _join(prefix: str, *rest: str) -> str:
    return "/".join([prefix, *rest]) if prefix else "/".join(rest)


def master_key(prefix: str) -> str:
    return _join(prefix, MASTER_NAME)


def dvr_master_key(prefix: str) -> str:
    return _join(prefix, DVR_MASTER_NAME)


def dvr_playlist_key(prefix: str, rendition: str) -> str:
    return _join(prefix, rendition, DVR_PLAYLIST_NAME)


def live_playlist_key(prefix: str, rendition: str) -> str:
    return _join(prefix, rendition, LIVE_PLAYLIST_NAME)


def event_playlist_key(prefix: str, rendition: str) -> str:
    return _join(prefix, rendition, EVENT_PLAYLIST_NAME)


def part_name(index: int) -> str:
    return f"part_{index:06d}.m3u8"


def part_playlist_key(prefix: str, rendition: str, index: int) -> str:
    """Part `index` (0-based) of the rendition's recording."""
    return _join(prefix, rendition, PARTS_FOLDER, part_name(index))


_SEGMENT_NAME = re.compile(r"seg_(\d+)\.ts")


def segment_name(sequence: int) -> str:
    return f"seg_{sequence:06d}.ts"


def segment_numbers(text: str) -> list[int]:
    """The numbers of every segment name found in `text` (a playlist)."""
    return [int(number) for number in _SEGMENT_NAME.findall(text)]


def segment_key(prefix: str, rendition: str, sequence: int) -> str:
    return _join(prefix, rendition, segment_name(sequence))
