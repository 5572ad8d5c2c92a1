"""ONAIR_S3_PORT: every port the embedded SeaweedFS derives from it must exist."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from api.settings import ConfigError, load_settings
from packager.s3server import EmbeddedS3, S3Ports, connect_to_listener
from tests.support.ports import free_port
from tests.support.service import ONAIR

# P + 3 (the filer) + 10000 (its gRPC port) is the highest port SeaweedFS derives from P.
MAX_S3_PORT = 65535 - 3 - 10000


def test_the_highest_s3_port_derives_ports_up_to_65535() -> None:
    assert max(S3Ports(MAX_S3_PORT).all()) == 65535
    assert load_settings({"ONAIR_S3_PORT": str(MAX_S3_PORT)}).s3_port == MAX_S3_PORT


@pytest.mark.parametrize("value", [str(MAX_S3_PORT + 1), "60000", "65535"])
def test_an_s3_port_whose_derived_ports_exceed_65535_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"ONAIR_S3_PORT": value})
    message = str(error.value)
    assert message.startswith(f"ONAIR_S3_PORT={value!r}") and "\n" not in message
    with pytest.raises(ValueError):
        S3Ports(int(value))
    with pytest.raises(ValueError):
        EmbeddedS3(Path("unused"), int(value), "k" * 8, "s" * 16)


def test_onair_run_refuses_it_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
    env.update(ONAIR_S3_PORT="60000", ONAIR_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([ONAIR, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "ONAIR_S3_PORT='60000'" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing started, nothing written


def test_a_socket_connected_to_itself_is_not_a_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """Polling a loopback port in the ephemeral range can connect the socket to itself
    (TCP simultaneous open): SeaweedFS's TLS check then read its own ClientHello and
    refused to start ("does not serve mutual TLS"), now and then, in the suite."""
    own = socket.socket()
    own.bind(("127.0.0.1", 0))
    own.connect(own.getsockname())  # what the kernel did by chance
    assert own.getsockname() == own.getpeername()
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: own)
    assert connect_to_listener("127.0.0.1", own.getsockname()[1]) is None
    assert own.fileno() == -1  # closed


def test_a_real_listener_is_connected_to() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        connection = connect_to_listener("127.0.0.1", server.getsockname()[1])
        assert connection is not None
        connection.close()
    assert connect_to_listener("127.0.0.1", free_port()) is None
