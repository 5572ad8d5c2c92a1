"""Free TCP (and UDP) ports on 127.0.0.1, safe when pytest-xdist runs several workers at once.

`free_port` asks the kernel (an ephemeral port, 32768-60999 on Linux: the kernel does
not hand the same one to two workers at once). SeaweedFS needs a block of ports
derived from one base (`S3Ports`): those blocks are drawn below the ephemeral range, so
no ephemeral port of another test can land in one, and each xdist worker draws from a
range of its own, so two workers never pick the same block.
"""

from __future__ import annotations

import os
import secrets
import socket

from packager.s3server import GRPC_OFFSET, S3Ports

_BLOCK_LOW = 10_000  # the lowest base of a SeaweedFS block
_BLOCK_HIGH = 32_768 - GRPC_OFFSET - 4  # its highest port stays below the ephemeral range


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now (SRT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _worker_range() -> range:
    """This xdist worker's share of the block bases (all of them without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker.startswith("gw") else 0
    share = (_BLOCK_HIGH - _BLOCK_LOW) // max(count, 1)
    low = _BLOCK_LOW + index * share
    return range(low, low + share)


def free_port_block() -> int:
    """A base port P such that every port SeaweedFS derives from P is free."""
    bases = _worker_range()
    for _ in range(200):
        base = bases[secrets.randbelow(len(bases))]
        if all(_port_free(p) for p in S3Ports(base).all()):
            return base
    raise RuntimeError("no free port block for SeaweedFS")
