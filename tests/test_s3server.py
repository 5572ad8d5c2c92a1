import os
import signal

from packager.s3server import EmbeddedS3, S3Ports
from tests.conftest import free_port_block


def test_ports_never_collide_with_onair_defaults() -> None:
    ports = S3Ports(8333).all()
    assert len(set(ports)) == 8
    for onair_default in (8080, 1935, 9000):
        assert onair_default not in ports


def test_put_get_roundtrip(s3_client, bucket) -> None:
    s3_client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello", ContentType="text/plain")
    got = s3_client.get_object(Bucket=bucket, Key="a/b.txt")
    assert got["Body"].read() == b"hello"
    assert got["ContentType"] == "text/plain"


def test_stop_leaves_nothing_running(tmp_path) -> None:
    server = EmbeddedS3(tmp_path, free_port_block(), "k" * 8, "s" * 16)
    server.start()
    pid = server._process.pid  # type: ignore[union-attr]
    server.stop()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:  # pragma: no cover - a zombie would have been reaped by wait()
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("weed still running after stop()")
    server.stop()  # idempotent
