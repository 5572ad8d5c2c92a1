"""The publisher's spool: segments on local disk until they are stored.

    {spool_dir}/{rendition}/seg_000042.ts

A file is written under a `.part` name and renamed, so a file with the final name is
always complete (a crash leaves at worst a `.part`). Disk errors are logged and
reported as None, never raised: the caller keeps the data in memory instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from packager.layout import segment_name

logger = logging.getLogger(__name__)


class Spool:
    """Segment files under one directory, one folder per rendition."""

    def __init__(self, root: Path, log_prefix: str = "") -> None:
        self.root = Path(root)
        self._log_prefix = log_prefix

    def prepare(self, renditions: Iterable[str]) -> None:
        for name in renditions:
            (self.root / name).mkdir(parents=True, exist_ok=True)

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
