"""The guard's policy (what may be reached, how long and how much may be read) and its
errors, read once from `ONAIR_OUTBOUND_*`."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import aiohttp

from .addresses import IPAddress, IPNetwork, address_refused

ALLOW_PRIVATE_ENV = "ONAIR_OUTBOUND_ALLOW_PRIVATE"
CA_FILE_ENV = "ONAIR_OUTBOUND_CA_FILE"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class OutboundError(Exception):
    """An outbound connection did not happen or failed; the message is safe to show.

    `target` is an origin (`https://hooks.example.com:443`) or `host:port`, never a
    URL's credentials, path or query; `reason` says what happened.
    """

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(self._message(target, reason))
        self.target = target
        self.reason = reason

    @staticmethod
    def _message(target: str, reason: str) -> str:
        return f"{target}: {reason}"

    def at(self, target: str) -> Self:
        """The same error, said of `target` (the URL's origin, a redirect hop)."""
        return type(self)(target, self.reason)


class OutboundRefused(OutboundError):
    """The guard refused a URL or an address: nothing was sent to it."""

    def __init__(self, target: str, reason: str, *, address: str | None = None) -> None:
        super().__init__(target, reason)
        self.address = address  # the refused IP address, when there was one

    @staticmethod
    def _message(target: str, reason: str) -> str:
        return f"outbound connection to {target} refused: {reason}"

    def at(self, target: str) -> Self:
        return type(self)(target, self.reason, address=self.address)


class OutboundFailed(OutboundError):
    """Permitted, but it failed: DNS, connect, TLS, a timeout, too many redirects."""


class ResponseTooLarge(OutboundError):
    """The response is longer than its byte limit; the rest was not read."""


class OutboundConfigError(ValueError):
    """An `ONAIR_OUTBOUND_*` value is invalid; the message is one line naming the variable."""


@dataclass(frozen=True)
class OutboundPolicy:
    """What outbound connections may reach, and how long and how much they may read."""

    allow_private: bool = False  # development and tests only: local services reachable
    ca_file: Path | None = None  # an extra CA to trust, beside the system store
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 10.0  # between two reads of one response
    total_timeout_seconds: float = 30.0  # one fetch, every redirect hop included
    max_response_bytes: int = 8 * 1024**2
    max_redirects: int = 5
    # Networks a caller trusts although they are not public (an operator's own
    # receiver; tests). Metadata addresses stay refused.
    trusted_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OutboundPolicy:
        """The policy `ONAIR_OUTBOUND_ALLOW_PRIVATE` and `ONAIR_OUTBOUND_CA_FILE` say."""
        allow_private = environ.get(ALLOW_PRIVATE_ENV, "")
        ca_file = environ.get(CA_FILE_ENV, "")
        return cls(
            allow_private=_bool(ALLOW_PRIVATE_ENV, allow_private) if allow_private else False,
            ca_file=_ca_file(CA_FILE_ENV, ca_file) if ca_file else None,
        )

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why this policy refuses `address` ("a loopback address"), or None."""
        return address_refused(
            address, allow_private=self.allow_private, trusted=self.trusted_networks
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying TLS: the system's CAs and `ca_file`'s, host names checked, TLS 1.2+."""
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca_file is not None:
            context.load_verify_locations(cafile=self.ca_file)
        return context

    def client_timeout(self) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for one request under this policy."""
        return aiohttp.ClientTimeout(
            total=self.total_timeout_seconds,
            connect=self.connect_timeout_seconds,
            sock_connect=self.connect_timeout_seconds,
            sock_read=self.read_timeout_seconds,
        )


def checked_ip(ip: IPAddress, port: int, policy: OutboundPolicy) -> IPAddress:
    """`ip`, when `policy` permits it; `OutboundRefused` saying what it is otherwise."""
    reason = policy.refusal(ip)
    if reason is not None:
        where = f"[{ip}]:{port}" if isinstance(ip, ipaddress.IPv6Address) else f"{ip}:{port}"
        raise OutboundRefused(where, f"{ip} is {reason}", address=str(ip))
    return ip


def _bool(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise OutboundConfigError(f"{name}={value!r}: true or false (also 1/0, yes/no, on/off)")


def _ca_file(name: str, value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise OutboundConfigError(f"{name}={value!r}: no such file")
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise OutboundConfigError(
            f"{name}={value!r}: not a PEM file of CA certificates ({exc})"
        ) from None
    return path
