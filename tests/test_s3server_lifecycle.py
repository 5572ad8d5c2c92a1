"""The embedded SeaweedFS's security across its life: upgrade, restart, a start that must fail."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from packager import s3server
from packager.s3server import GRPC_OFFSET, EmbeddedS3, S3ServerError, find_weed, jwt_keys
from tests.support.ports import free_port_block

pytestmark = pytest.mark.slow  # SeaweedFS started, killed and restarted for real

SEGMENT = secrets.token_bytes(300_000)
PLAYLIST = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:2.0,\nseg_000000.ts\n"


def legacy_command(server: EmbeddedS3) -> list[str]:
    """The command line onair ran SeaweedFS with before its internal ports were locked."""
    p = server.ports
    return [
        find_weed(),
        "server",
        f"-ip={server.host}",
        f"-ip.bind={server.host}",
        f"-dir={server.data_dir / 'store'}",
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
        f"-s3.config={server._write_config()}",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=256",
    ]


def client_of(server: EmbeddedS3) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )


def write_with_legacy_seaweedfs(server: EmbeddedS3) -> None:
    """Objects stored by SeaweedFS as onair configured it before (no security.toml)."""
    (server.data_dir / "store").mkdir(parents=True, exist_ok=True)
    with open(server.data_dir / "weed.log", "ab") as log:
        process = subprocess.Popen(
            legacy_command(server), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while not server._answers():
            assert process.poll() is None and time.monotonic() < deadline, "legacy start failed"
            time.sleep(0.2)
        client = client_of(server)
        client.create_bucket(Bucket="live")
        client.put_object(Bucket="live", Key="news/master.m3u8", Body=PLAYLIST)
        client.put_object(Bucket="live", Key="news/720p/seg_000000.ts", Body=SEGMENT)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def assert_objects_intact(server: EmbeddedS3) -> None:
    client = client_of(server)
    assert client.get_object(Bucket="live", Key="news/master.m3u8")["Body"].read() == PLAYLIST
    segment = client.get_object(Bucket="live", Key="news/720p/seg_000000.ts")["Body"].read()
    assert segment == SEGMENT


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_data_dir_from_before_the_lock_keeps_its_objects_and_gets_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmbeddedS3(tmp_path / "seaweedfs", free_port_block(), "old-key-1", "old-secret-12345")
    write_with_legacy_seaweedfs(server)
    assert not server.security_config.exists()

    server.start()  # the upgrade: the first start writes the security config
    try:
        assert_objects_intact(server)
        client_of(server).put_object(Bucket="live", Key="news/after.m3u8", Body=b"#EXTM3U\n")
        master = f"http://{server.host}:{server.ports.master}/dir/assign"
        with pytest.raises(Exception, match="404"):
            s3server.urllib.request.urlopen(master, timeout=5)
    finally:
        server.stop()
    assert mode(server.security_config) == 0o600
    assert mode(server.tls.ca.parent) == 0o700
    for path in (server.tls.ca, server.tls.cert, server.tls.key):
        assert mode(path) == 0o600
    keys = jwt_keys(server.security_config)
    certificate = server.tls.cert.read_bytes()

    # A restart reuses the keys and the certificates, whatever WEED_* the environment
    # holds (SeaweedFS would let them override security.toml: they are not passed on).
    monkeypatch.setenv("WEED_GRPC_CA", str(tmp_path / "nowhere.crt"))
    monkeypatch.setenv("WEED_JWT_SIGNING_KEY", "known-to-an-attacker")
    server.start()
    try:
        assert_objects_intact(server)
        assert client_of(server).get_object(Bucket="live", Key="news/after.m3u8")["Body"].read()
    finally:
        server.stop()
    assert jwt_keys(server.security_config) == keys
    assert server.tls.cert.read_bytes() == certificate


def test_start_refuses_to_run_seaweedfs_with_plaintext_grpc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SeaweedFS quietly serves plaintext gRPC when it finds no certificates: start() must
    # notice and stop it rather than run an open server.
    monkeypatch.setattr(s3server, "security_toml", lambda keys, tls: "")
    started: list[int] = []
    wait_ready = EmbeddedS3._wait_ready

    def recording(self: EmbeddedS3, timeout_seconds: float, log_path: Path) -> None:
        assert self._process is not None
        started.append(self._process.pid)
        wait_ready(self, timeout_seconds, log_path)

    monkeypatch.setattr(EmbeddedS3, "_wait_ready", recording)
    server = EmbeddedS3(tmp_path, free_port_block(), "k" * 8, "s" * 16)
    try:
        with pytest.raises(S3ServerError, match="does not serve mutual TLS"):
            server.start()
        assert not server.running
    finally:
        server.stop()  # had it started (the test failing), it must not outlive the test
    with pytest.raises(ProcessLookupError):
        os.kill(started[0], 0)
