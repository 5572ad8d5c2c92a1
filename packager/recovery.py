"""What an HLS writer leaves in its spool when it is stopped before its uploads are done.

A writer closed with segments not yet stored (a service stopping while the storage
hangs) writes `{spool_dir}/pending.json`: its renditions, what its playlists list
(each segment with its `EXT-X-PROGRAM-DATE-TIME`), and each segment still to store, in
order, with its place in the recording and its wall-clock arrival. The next start reads
it back and a writer made from it (`packager.hls.leftover`) uploads those segments in
order, lists them where they belong and ends the playlists: nothing waits for an
operator.

A process that dies without closing its writer leaves no manifest: its spool is set
aside for an operator as before (`Spool`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from media.segments import VariantInfo
from packager.playlist import ListedSegment

logger = logging.getLogger(__name__)

MANIFEST_NAME = "pending.json"
# 2: segments carry their wall-clock instants (ISO 8601); 1 (read too) did not.
MANIFEST_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class PendingSegment:
    """A segment not yet stored, or stored but not yet listed (`file` None)."""

    rendition: str
    sequence: int  # the encoder's number, as the spool file is named
    number: int | None  # its number in the recording; None if the old run never knew
    duration_seconds: float
    discontinuity: bool  # listed with EXT-X-DISCONTINUITY
    file: str | None  # relative to the spool directory
    opens_run: bool = False  # the old run's first: TS discontinuity indicators to clear
    arrived_at: str | None = None  # ISO 8601: when its first frame arrived


@dataclass(frozen=True)
class Leftover:
    """A closed writer's unfinished work."""

    variants: list[VariantInfo]
    segment_seconds: float
    resumed: bool  # the old run had read the stored playlists: `published` is complete
    published: dict[str, list[ListedSegment]]  # rendition -> what its playlists list
    pending: list[PendingSegment]


def _listed(segment: ListedSegment) -> list[Any]:
    instant = segment.program_date_time
    return [
        segment.sequence,
        segment.duration_seconds,
        segment.discontinuity,
        None if instant is None else instant.isoformat(),
    ]


def _from_listed(entry: list[Any]) -> ListedSegment:
    number, duration, discontinuity, *rest = entry
    instant = rest[0] if rest else None
    return ListedSegment(
        int(number),
        float(duration),
        bool(discontinuity),
        None if instant is None else datetime.fromisoformat(instant),
    )


def write_leftover(spool_dir: Path, leftover: Leftover) -> Path | None:
    """Write the manifest atomically; None (logged) if the disk refused."""
    body = {
        "version": MANIFEST_VERSION,
        "variants": [asdict(v) for v in leftover.variants],
        "segmentSeconds": leftover.segment_seconds,
        "resumed": leftover.resumed,
        "published": {
            name: [_listed(s) for s in listed] for name, listed in leftover.published.items()
        },
        "pending": [asdict(p) for p in leftover.pending],
    }
    path = spool_dir / MANIFEST_NAME
    partial = path.with_name(path.name + ".part")
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(body))
        os.replace(partial, path)
    except OSError as error:
        logger.error("cannot write %s: %s", path, error)
        return None
    return path


def read_leftover(spool_dir: Path) -> Leftover | None:
    """The manifest of `spool_dir`, or None if there is none or it is unreadable."""
    path = spool_dir / MANIFEST_NAME
    try:
        body: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.error("%s is unreadable, its segments are left for an operator: %s", path, error)
        return None
    try:
        if body.get("version") not in _READABLE_VERSIONS:
            raise ValueError(f"version {body.get('version')!r}")
        return Leftover(
            variants=[VariantInfo(**v) for v in body["variants"]],
            segment_seconds=float(body["segmentSeconds"]),
            resumed=bool(body["resumed"]),
            published={
                name: [_from_listed(entry) for entry in listed]
                for name, listed in body["published"].items()
            },
            pending=[PendingSegment(**p) for p in body["pending"]],
        )
    except (KeyError, TypeError, ValueError) as error:
        logger.error("%s is not a manifest onair wrote, left for an operator: %s", path, error)
        return None


def remove_leftover(spool_dir: Path) -> None:
    (spool_dir / MANIFEST_NAME).unlink(missing_ok=True)
