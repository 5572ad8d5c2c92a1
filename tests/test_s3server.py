import datetime
import os
import signal
import stat
import tomllib

import pytest
from cryptography import x509

from packager.s3server import (
    CERT_RENEW_DAYS,
    CERT_VALID_DAYS,
    JWT_KEYS,
    EmbeddedS3,
    S3Ports,
    TlsFiles,
    jwt_keys,
    security_toml,
)
from tests.support.ports import free_port_block

pytestmark = pytest.mark.slow  # SeaweedFS started and stopped for real


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


# -- the security material, without SeaweedFS -------------------------------------------------


def test_security_config_signs_every_http_path_and_requires_mutual_tls(tmp_path) -> None:
    tls = TlsFiles.in_dir(tmp_path)
    tls.create(datetime.datetime.now(datetime.UTC), ["127.0.0.1"])
    keys = jwt_keys(tmp_path / "absent.toml")
    config = tomllib.loads(security_toml(keys, tls))
    jwt = config["jwt"]
    found = [
        jwt["signing"]["key"],
        jwt["signing"]["read"]["key"],
        jwt["filer_signing"]["key"],
        jwt["filer_signing"]["read"]["key"],
    ]
    assert found == [keys[s] for s in JWT_KEYS]
    assert len(set(found)) == 4 and all(len(key) >= 32 for key in found)
    assert config["access"]["ui"] is False
    assert config["filer"]["expose_directory_metadata"]["enabled"] is False
    assert config["grpc"]["ca"] == str(tls.ca)
    for component in ("master", "volume", "filer", "s3", "client"):
        section = config["grpc"][component]
        assert (section["cert"], section["key"]) == (str(tls.cert), str(tls.key))


def test_jwt_keys_are_kept_and_bad_ones_replaced(tmp_path) -> None:
    path = tmp_path / "security.toml"
    tls = TlsFiles.in_dir(tmp_path)
    keys = jwt_keys(path)
    path.write_text(security_toml(keys, tls))
    assert jwt_keys(path) == keys
    path.write_text(security_toml({**keys, "jwt.signing": "short"}, tls))
    again = jwt_keys(path)
    assert again["jwt.signing"] not in ("short", keys["jwt.signing"])
    assert {k: v for k, v in again.items() if k != "jwt.signing"} == {
        k: v for k, v in keys.items() if k != "jwt.signing"
    }
    path.write_text("not [ toml")
    assert set(jwt_keys(path).values()).isdisjoint(keys.values())


def test_tls_files_are_private_and_checked(tmp_path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    tls = TlsFiles.in_dir(tmp_path / "a")
    tls.ca.parent.mkdir()
    assert not tls.usable(now)
    tls.create(now, ["127.0.0.1"])
    assert tls.usable(now)
    for path in (tls.ca, tls.cert, tls.key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Renewed before its end; another CA's certificate, a foreign key or garbage: not usable.
    assert not tls.usable(now + datetime.timedelta(days=CERT_VALID_DAYS - CERT_RENEW_DAYS + 1))
    other = TlsFiles.in_dir(tmp_path / "b")
    other.ca.parent.mkdir()
    other.create(now, ["127.0.0.1"])
    for swapped in (
        TlsFiles(other.ca, tls.cert, tls.key),
        TlsFiles(tls.ca, tls.cert, other.key),
        TlsFiles(tls.ca, tls.cert, tmp_path / "missing.key"),
    ):
        assert not swapped.usable(now)
    tls.key.write_bytes(b"garbage")
    assert not tls.usable(now)


def test_unix_sockets_stay_in_a_private_directory(tmp_path) -> None:
    short = EmbeddedS3(tmp_path, free_port_block(), "k" * 8, "s" * 16)
    run = short._socket_dir()
    assert run == tmp_path.absolute() / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    # Too long a path for a unix socket (108 bytes): a private directory of its own instead,
    # removed at stop.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedS3(deep, free_port_block(), "k" * 8, "s" * 16)
    sockets = server._socket_dir()
    assert len(os.fsencode(sockets / "filer.sock")) <= 107
    assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
    server.stop()
    assert not sockets.exists()
