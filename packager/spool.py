"""The HLS writer's spool: segments on local disk until they are stored.

    {spool_dir}/{rendition}/seg_000042.ts

A file is written under a `.part` name and renamed, so a file with the final name is
always complete (a crash leaves at worst a `.part`). Disk errors are logged and
reported as None, never raised: the caller keeps the data in memory instead.

Segments an earlier writer left behind (the process died before they were
stored) are moved aside to `{spool_dir}/orphaned-{time}/{rendition}/` when a new
writer starts, never overwritten: they are not uploaded automatically (their
place in the playlists is unknown), an operator can upload them by hand.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from packager.layout import segment_name

logger = logging.getLogger(__name__)


class SpoolBudget:
    """The bytes every HLS writer of the host keeps in its spool, capped (thread-safe)."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (nothing reserved) if that would pass the cap."""
        with self._lock:
            if self.max_bytes is not None and self._used + size > self.max_bytes:
                return False
            self._used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._used = max(0, self._used - size)


class Spool:
    """Segment files under one directory, one folder per rendition."""

    def __init__(self, root: Path, log_prefix: str = "") -> None:
        self.root = Path(root)
        self._log_prefix = log_prefix

    def prepare(self, renditions: Iterable[str], *, set_aside: bool = True) -> None:
        """Create the rendition folders, first moving aside what an earlier run left
        (unless it is to be uploaded: `set_aside=False`)."""
        if set_aside:
            self._set_aside_leftovers()
        for name in renditions:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def _set_aside_leftovers(self) -> None:
        try:
            folders = [f for f in self.root.iterdir() if f.is_dir()]
        except OSError:
            return  # no spool yet
        aside = self.root / time.strftime("orphaned-%Y%m%dT%H%M%S")
        moved = 0
        for folder in folders:
            if folder.name.startswith("orphaned-"):
                continue
            for path in sorted(folder.glob("seg_*")):
                if path.name.endswith(".part"):
                    path.unlink(missing_ok=True)  # incomplete by construction
                    continue
                target = aside / folder.name / path.name
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
                    moved += 1
                except OSError as error:
                    logger.error("%s cannot set %s aside: %s", self._log_prefix, path, error)
        if moved:
            logger.warning(
                "%s %d segments of an earlier run were never uploaded: kept in %s",
                self._log_prefix,
                moved,
                aside,
            )

    def path(self, rendition: str, sequence: int) -> Path:
        return self.root / rendition / segment_name(sequence)

    def write(self, rendition: str, sequence: int, data: bytes) -> Path | None:
        """Write one segment atomically; None if the disk refused."""
        path = self.path(rendition, sequence)
        partial = path.with_name(path.name + ".part")
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        except OSError as error:
            logger.error("%s cannot spool %s: %s", self._log_prefix, path, error)
            partial.unlink(missing_ok=True)
            return None
        return path

    def read(self, path: Path) -> bytes | None:
        """The segment's bytes; None if the file is gone or unreadable."""
        try:
            return path.read_bytes()
        except OSError as error:
            logger.error("%s spooled %s unreadable: %s", self._log_prefix, path, error)
            return None

    def remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            logger.warning("%s cannot remove %s: %s", self._log_prefix, path, error)

    def remove_empty_folders(self, renditions: Iterable[str]) -> None:
        for name in renditions:
            try:
                (self.root / name).rmdir()
            except OSError:
                pass  # not empty, or already gone
