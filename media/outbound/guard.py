"""URLs and names through the guard: a URL's syntax checked, its host resolved, every
address checked; and the checked address a non-HTTP caller (RTMP, SRT) connects to."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import NamedTuple

from yarl import URL

from .addresses import IPAddress, ip_literal
from .policy import OutboundFailed, OutboundPolicy, OutboundRefused, checked_ip

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> addresses as text`: the system's DNS by default, a fake in unit tests."""

HTTP_SCHEMES = frozenset({"http", "https"})
STREAM_SCHEMES = frozenset({"rtmp", "rtmps", "srt"})
ALL_SCHEMES = HTTP_SCHEMES | STREAM_SCHEMES
DEFAULT_PORTS = {"http": 80, "https": 443, "rtmp": 1935, "rtmps": 443}  # SRT has none
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$", re.IGNORECASE)  # IDN: punycode


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def origin(url: URL) -> str:
    """`scheme://host:port` of `url`: all that messages and logs may say of it."""
    return f"{url.scheme}://{host_port(url.raw_host or '', url.port or 0)}"


def check_url(url: str, schemes: Collection[str] = ALL_SCHEMES) -> URL:
    """`url` parsed, its default port made explicit, when onair may open it.

    `OutboundRefused` otherwise: the scheme is not on `schemes`, there is no host or no
    port to connect to, or parsers could read it differently: whitespace, a control
    character or a backslash, more than one `@`, a host neither an IP address nor a
    host name, a numeric host other than a canonical IP address (`127.1`, `0x7f000001`
    and `2130706433` are 127.0.0.1 to some parsers, a name to others).
    """
    if any(c.isspace() or c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise OutboundRefused("a URL", "it has whitespace, a control character or a backslash")
    try:
        parsed = URL(url)
        scheme, host, port = parsed.scheme.lower(), parsed.raw_host, parsed.explicit_port
    except ValueError:
        raise OutboundRefused("a URL", "it is not a valid URL") from None
    if scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise OutboundRefused(f"a {scheme or 'relative'} URL", f"only {allowed} are allowed")
    if not host:
        raise OutboundRefused(f"a {scheme} URL", "it has no host")
    authority = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if authority.count("@") > 1:
        raise OutboundRefused(f"{scheme}://{host}", "its authority has more than one '@'")
    label = host.rstrip(".").rsplit(".", 1)[-1]
    if ip_literal(host) is None:
        if _NUMERIC_LABEL.match(label):
            raise OutboundRefused(f"{scheme}://{host}", "its host is not a canonical IP address")
        if not _HOST_NAME.match(host):
            raise OutboundRefused(f"{scheme}://{host}", "its host is not a valid host name")
    if port == 0:
        raise OutboundRefused(f"{scheme}://{host}", "port 0 is not a port to connect to")
    if port is None and scheme not in DEFAULT_PORTS:
        raise OutboundRefused(f"{scheme}://{host}", f"a {scheme} URL needs a port")
    return parsed if port is not None else parsed.with_port(DEFAULT_PORTS[scheme])


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's DNS (`loop.getaddrinfo`): every address of `host`."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def checked_addresses(
    host: str, port: int, answers: Sequence[str], policy: OutboundPolicy
) -> list[IPAddress]:
    """`answers` for `host`, once each, when the policy permits every one of them.

    One refused answer refuses the name: a public and a private answer together are how
    DNS rebinding gets past a check that looks at one of them.
    """
    addresses = list(dict.fromkeys(ipaddress.ip_address(answer) for answer in answers))
    if not addresses:
        raise OutboundFailed(host_port(host, port), f"{host} resolves to no address")
    for ip in addresses:
        reason = policy.refusal(ip)
        if reason is not None:
            where = host_port(host, port)
            raise OutboundRefused(where, f"{host} resolves to {ip}, {reason}", address=str(ip))
    return addresses


def _unresolved(host: str, port: int, error: OSError) -> OutboundFailed:
    return OutboundFailed(
        host_port(host, port), f"{host} does not resolve ({error.strerror or error})"
    )


async def resolve(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[IPAddress]:
    """The addresses of `host`, when every one is permitted; `OutboundRefused` otherwise."""
    literal = ip_literal(host)
    if literal is not None:
        return [checked_ip(literal, port, policy)]
    try:
        answers = await (resolver or system_resolver)(host, port)
    except OSError as exc:
        raise _unresolved(host, port, exc) from None
    return checked_addresses(host, port, answers, policy)


class CheckedAddress(NamedTuple):
    """Where a non-HTTP caller connects: checked, so the name is not resolved again."""

    ip: str
    port: int

    @property
    def netloc(self) -> str:
        """`ip:port`, an IPv6 address in brackets: for the URL handed to a muxer."""
        return host_port(self.ip, self.port)


async def connect_address(
    url: str,
    policy: OutboundPolicy,
    *,
    schemes: Collection[str] = STREAM_SCHEMES,
    resolver: Resolver | None = None,
) -> CheckedAddress:
    """Where to connect for `url` (rtmp, rtmps, srt): its host resolved and checked."""
    parsed = check_url(url, schemes)
    host, port = parsed.raw_host or "", parsed.port or 0
    try:
        addresses = await resolve(host, port, policy, resolver)
    except (OutboundRefused, OutboundFailed) as exc:
        raise _said_of(exc, parsed) from None
    return CheckedAddress(str(addresses[0]), port)


def connect_address_blocking(
    url: str, policy: OutboundPolicy, *, schemes: Collection[str] = STREAM_SCHEMES
) -> CheckedAddress:
    """`connect_address` for a thread (a restream's muxer), with the system's DNS."""
    parsed = check_url(url, schemes)
    host, port = parsed.raw_host or "", parsed.port or 0
    try:
        literal = ip_literal(host)
        if literal is not None:
            addresses = [checked_ip(literal, port, policy)]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise _unresolved(host, port, exc) from None
            answers = [str(info[4][0]) for info in infos]
            addresses = checked_addresses(host, port, answers, policy)
    except (OutboundRefused, OutboundFailed) as exc:
        raise _said_of(exc, parsed) from None
    return CheckedAddress(str(addresses[0]), port)


def _said_of(error: OutboundRefused | OutboundFailed, url: URL) -> Exception:
    if isinstance(error, OutboundRefused):
        log.warning("[outbound %s] refused: %s", origin(url), error.reason)
    return error.at(origin(url))
