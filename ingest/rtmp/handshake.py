"""The simple RTMP handshake (C0/C1/C2 <-> S0/S1/S2), as pure functions over bytes.

The server answers with S1 version bytes zero, which makes digest-capable clients
(librtmp, the OBS lineage) fall back to the simple handshake; ffmpeg and GStreamer
use the simple handshake anyway. S2 echoes C1 unchanged, which every client accepts.
"""

from __future__ import annotations

import os
import struct

from ingest.rtmp.errors import HandshakeError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536  # C1, C2, S1, S2
C0C1_SIZE = 1 + HANDSHAKE_SIZE
S0S1S2_SIZE = 1 + 2 * HANDSHAKE_SIZE


def check_c0(c0: bytes) -> None:
    """Validate the one-byte C0 (the protocol version); raises HandshakeError."""
    if len(c0) != 1:
        raise HandshakeError(f"C0 must be 1 byte, got {len(c0)}")
    if c0[0] != RTMP_VERSION:
        raise HandshakeError(f"unsupported RTMP version {c0[0]} (want {RTMP_VERSION})")


def parse_c0c1(data: bytes) -> bytes:
    """Validate C0+C1 (1537 bytes) and return C1."""
    if len(data) != C0C1_SIZE:
        raise HandshakeError(f"C0+C1 must be {C0C1_SIZE} bytes, got {len(data)}")
    check_c0(data[:1])
    return bytes(data[1:])


def server_response(c1: bytes, *, time_ms: int = 0, random_bytes: bytes | None = None) -> bytes:
    """S0+S1+S2 for a client's C1: S1 = time, four zero version bytes, random; S2 = C1."""
    if len(c1) != HANDSHAKE_SIZE:
        raise HandshakeError(f"C1 must be {HANDSHAKE_SIZE} bytes, got {len(c1)}")
    filler = os.urandom(HANDSHAKE_SIZE - 8) if random_bytes is None else random_bytes
    if len(filler) != HANDSHAKE_SIZE - 8:
        raise ValueError(f"random_bytes must be {HANDSHAKE_SIZE - 8} bytes")
    s1 = struct.pack(">II", time_ms & 0xFFFFFFFF, 0) + filler
    return bytes([RTMP_VERSION]) + s1 + c1


def check_c2(c2: bytes) -> None:
    """Validate C2's length. Its content is not checked: clients echo S1 loosely."""
    if len(c2) != HANDSHAKE_SIZE:
        raise HandshakeError(f"C2 must be {HANDSHAKE_SIZE} bytes, got {len(c2)}")


# Client side, for tests and tools.


def client_c0c1(*, time_ms: int = 0, random_bytes: bytes | None = None) -> bytes:
    """C0+C1 of a simple-handshake client (version bytes zero)."""
    filler = os.urandom(HANDSHAKE_SIZE - 8) if random_bytes is None else random_bytes
    if len(filler) != HANDSHAKE_SIZE - 8:
        raise ValueError(f"random_bytes must be {HANDSHAKE_SIZE - 8} bytes")
    return bytes([RTMP_VERSION]) + struct.pack(">II", time_ms & 0xFFFFFFFF, 0) + filler


def parse_s0s1s2(data: bytes) -> tuple[bytes, bytes]:
    """Validate S0+S1+S2 and return (S1, S2)."""
    if len(data) != S0S1S2_SIZE:
        raise HandshakeError(f"S0+S1+S2 must be {S0S1S2_SIZE} bytes, got {len(data)}")
    if data[0] != RTMP_VERSION:
        raise HandshakeError(f"unsupported RTMP version {data[0]} (want {RTMP_VERSION})")
    return bytes(data[1 : 1 + HANDSHAKE_SIZE]), bytes(data[1 + HANDSHAKE_SIZE :])


def client_c2(s1: bytes) -> bytes:
    """C2 for a server's S1: an echo."""
    if len(s1) != HANDSHAKE_SIZE:
        raise HandshakeError(f"S1 must be {HANDSHAKE_SIZE} bytes, got {len(s1)}")
    return bytes(s1)
