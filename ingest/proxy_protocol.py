"""The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2), as pure functions.

A TCP load balancer (HAProxy, AWS NLB, a Kubernetes LoadBalancer) that speaks it sends
one header first on each connection, naming the client it accepted; what follows is
the client's own bytes. Version 1 is one ASCII line,
`PROXY TCP4|TCP6|UNKNOWN <src> <dst> <sport> <dport>\\r\\n`, at most 107 bytes;
version 2 is binary: a 12-byte signature, a version/command byte, a family/transport
byte, a big-endian length, the addresses, then TLVs (skipped here).

`header_length(buffer)` says how long the header at the start of a connection's first
bytes is (None: more bytes needed), refusing as early as it can what is not one;
`parse_header` parses it; `parse_v1`/`parse_v2` parse one version's whole header. A
header that names no client (v1 UNKNOWN, v2 LOCAL, a family other than TCP over IPv4
or IPv6) gives None: the connection's own peer address stands (a balancer's health
check). Anything malformed or too long is a `ProxyProtocolError`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_BYTES = 107  # the longest line the spec allows, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES = 16  # signature, version/command, family/transport, length
# Addresses take 36 bytes at most; the rest is TLVs (a balancer's unique id, TLS
# details, a cloud's endpoint id), a few dozen bytes in practice.
V2_MAX_LENGTH = 512
_V2_VERSION = 0x2
_V2_LOCAL = 0x0
_V2_PROXY = 0x1
_V2_INET = 0x1
_V2_INET6 = 0x2
_V2_STREAM = 0x1
_MAX_PORT = 65535


class ProxyProtocolError(ValueError):
    """What a connection sent is not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxiedAddress:
    """The client the balancer accepted: its IP address and TCP port."""

    host: str
    port: int

    @property
    def peername(self) -> tuple[str, int]:
        """As a socket's `peername` would say it."""
        return (self.host, self.port)


def header_length(buffer: bytes) -> int | None:
    """The length of the header `buffer` starts with, or None while it may still become
    one; `ProxyProtocolError` as soon as it cannot (or is longer than allowed)."""
    if buffer[: len(V1_PREFIX)] == V1_PREFIX[: len(buffer)]:
        if len(buffer) < len(V1_PREFIX):
            return None
        end = buffer.find(b"\r\n", 0, V1_MAX_BYTES)
        if end >= 0:
            return end + 2
        if len(buffer) >= V1_MAX_BYTES:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX_BYTES} bytes")
        return None
    if buffer[: len(V2_SIGNATURE)] != V2_SIGNATURE[: len(buffer)]:
        raise ProxyProtocolError("no PROXY protocol header")
    if len(buffer) < V2_FIXED_BYTES:
        return None
    _check_v2_version(buffer[12])
    (length,) = struct.unpack_from("!H", buffer, 14)
    if length > V2_MAX_LENGTH:
        raise ProxyProtocolError(f"PROXY v2 header of {length} bytes (limit {V2_MAX_LENGTH})")
    return V2_FIXED_BYTES + length


def parse_header(buffer: bytes) -> tuple[ProxiedAddress | None, int] | None:
    """The header at the start of `buffer`, parsed, and its length; None while incomplete."""
    length = header_length(buffer)
    if length is None or len(buffer) < length:
        return None
    header = buffer[:length]
    return (parse_v1(header) if header.startswith(V1_PREFIX) else parse_v2(header)), length


def parse_v1(line: bytes) -> ProxiedAddress | None:
    """A whole v1 header (the line with its CRLF): the source, None for UNKNOWN."""
    if len(line) > V1_MAX_BYTES:
        raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX_BYTES} bytes")
    if not line.startswith(V1_PREFIX) or not line.endswith(b"\r\n"):
        raise ProxyProtocolError("not a PROXY v1 line")
    try:
        fields = line[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return None  # whatever follows UNKNOWN is to be ignored
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("PROXY v1 line: not 'PROXY TCP4|TCP6 src dst sport dport'")
    _, family, source, destination, source_port, destination_port = fields
    version = 4 if family == "TCP4" else 6
    host = _v1_address(source, version)
    _v1_address(destination, version)
    port = _v1_port(source_port)
    _v1_port(destination_port)
    return ProxiedAddress(host, port)


def v1_header(client: str) -> bytes:
    """The v1 line naming `client` ("ip:port", "[ipv6]:port"), for a connection made on
    its behalf (onair relaying a publisher to another host); `PROXY UNKNOWN` when it is
    not an address (the receiver then sees the connection's own peer)."""
    host, _, port = client.rpartition(":")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        number = _v1_port(port)
    except (ValueError, ProxyProtocolError):
        return b"PROXY UNKNOWN\r\n"
    if address.version == 4:
        return f"PROXY TCP4 {address} 0.0.0.0 {number} 0\r\n".encode()
    return f"PROXY TCP6 {address} :: {number} 0\r\n".encode()


def parse_v2(header: bytes) -> ProxiedAddress | None:
    """A whole v2 header (signature to the last TLV): the source, None for LOCAL and for
    families other than TCP over IPv4 or IPv6."""
    if len(header) < V2_FIXED_BYTES:
        raise ProxyProtocolError(f"PROXY v2 header cut short at {len(header)} bytes")
    if not header.startswith(V2_SIGNATURE):
        raise ProxyProtocolError("no PROXY v2 signature")
    command = _check_v2_version(header[12])
    family, transport = header[13] >> 4, header[13] & 0x0F
    (length,) = struct.unpack_from("!H", header, 14)
    if length > V2_MAX_LENGTH:
        raise ProxyProtocolError(f"PROXY v2 header of {length} bytes (limit {V2_MAX_LENGTH})")
    if len(header) != V2_FIXED_BYTES + length:
        raise ProxyProtocolError(
            f"PROXY v2 header of {len(header)} bytes, its length says {V2_FIXED_BYTES + length}"
        )
    body = header[V2_FIXED_BYTES:]
    if command == _V2_LOCAL or transport != _V2_STREAM:
        return None
    if family == _V2_INET:
        size = 4
    elif family == _V2_INET6:
        size = 16
    else:
        return None  # UNSPEC, AF_UNIX: nothing that is an IP client
    if len(body) < 2 * size + 4:
        raise ProxyProtocolError(f"PROXY v2 addresses cut short ({len(body)} bytes)")
    host = str(ipaddress.ip_address(body[:size]))
    (port,) = struct.unpack_from("!H", body, 2 * size)
    return ProxiedAddress(host, port)


def _check_v2_version(byte: int) -> int:
    """The command of a v2 version/command byte, checked."""
    if byte >> 4 != _V2_VERSION:
        raise ProxyProtocolError(f"PROXY v2 header of version {byte >> 4}")
    command = byte & 0x0F
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyProtocolError(f"PROXY v2 command {command}")
    return command


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 address {text[:40]!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} is not IPv{version}")
    return str(address)


def _v1_port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > _MAX_PORT:
        raise ProxyProtocolError(f"PROXY v1 port {text[:10]!r}")
    return int(text)
