"""HTTP(S) through the guard: an aiohttp session whose connector checks every connection
(its resolver checks names, its socket factory the address connected to, IP literals
included), and `OutboundClient.fetch`, which follows redirects itself, checking each
hop, and reads the body within its byte limit."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy
from yarl import URL

from .guard import HTTP_SCHEMES, Resolver, check_url, origin, resolve
from .policy import (
    OutboundError,
    OutboundFailed,
    OutboundPolicy,
    OutboundRefused,
    ResponseTooLarge,
    checked_ip,
)

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")


class _GuardedResolver(AbstractResolver):
    """The connector's resolver: a name is checked each time a connection is made."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver | None) -> None:
        self._policy = policy
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for ip in await resolve(host, port, self._policy, self._resolver):
            ip_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, ip_family):
                results.append(
                    {
                        "hostname": host,
                        "host": str(ip),
                        "port": port,
                        "family": ip_family,
                        "proto": 0,
                        "flags": socket.AI_NUMERICHOST,
                    }
                )
        if not results:
            raise OSError(f"{host} has no address of family {family!r}")
        return results

    async def close(self) -> None:
        """Nothing to release: the system resolver runs in the loop's executor."""


def _guarded_socket(policy: OutboundPolicy, addr_info: AddrInfoType) -> socket.socket:
    """The connector's socket factory: the last check, on the address connected to.

    aiohttp connects to an IP literal without asking the resolver; this sees it too.
    """
    family, kind, proto, _, sockaddr = addr_info
    checked_ip(ipaddress.ip_address(sockaddr[0]), int(sockaddr[1]), policy)
    return socket.socket(family, kind, proto)


def create_session(
    policy: OutboundPolicy, *, resolver: Resolver | None = None
) -> aiohttp.ClientSession:
    """A `ClientSession` whose every connection, redirect hops included, is guarded.

    Create it with the loop running and close it. `OutboundClient.fetch` uses it and
    follows redirects itself, to check each hop's scheme and count the hops.
    """
    connector = aiohttp.TCPConnector(
        resolver=_GuardedResolver(policy, resolver),
        socket_factory=functools.partial(_guarded_socket, policy),
        use_dns_cache=False,  # every connection asks (and checks) anew
        ssl=policy.ssl_context(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=policy.client_timeout(),
        trust_env=False,  # no proxy from the environment: we connect to the checked address
        cookie_jar=aiohttp.DummyCookieJar(),  # nothing carried from one user's URL to another
    )


async def read_limited(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body of `response`; `ResponseTooLarge` as soon as it is over `max_bytes`."""
    where = origin(response.url)
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        response.close()
        raise ResponseTooLarge(
            where, f"the response is {declared} bytes, over the limit of {max_bytes}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            response.close()
            raise ResponseTooLarge(where, f"the response is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class OutboundResponse:
    """A response read whole, within its byte limit."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL  # the last hop's; it may carry secrets, so not for logs
    redirects: int


class OutboundClient:
    """HTTP(S) to user-supplied URLs through the guard; one per owner, `async with` it."""

    def __init__(self, policy: OutboundPolicy, *, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OutboundClient:
        if self._session is None:
            self._session = create_session(self.policy, resolver=self._resolver)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_bytes: int | None = None,
    ) -> OutboundResponse:
        """`method url`, redirects followed and each hop checked, the body read whole.

        Raises an `OutboundError`: `OutboundRefused` (nothing was sent to what it
        names), `OutboundFailed` (DNS, connection, TLS, a timeout, too many redirects)
        or `ResponseTooLarge` (over `max_bytes`, default the policy's).
        """
        try:
            target = check_url(url, HTTP_SCHEMES)
        except OutboundRefused as exc:
            log.warning("[outbound %s] refused: %s", exc.target, exc.reason)
            raise
        limit = self.policy.max_response_bytes if max_bytes is None else max_bytes
        try:
            async with asyncio.timeout(self.policy.total_timeout_seconds):
                return await self._follow(target, method.upper(), dict(headers or {}), body, limit)
        except TimeoutError:
            seconds = self.policy.total_timeout_seconds
            raise OutboundFailed(
                origin(target), f"no complete response within {seconds:g} s"
            ) from None

    async def _follow(
        self, url: URL, method: str, headers: dict[str, str], body: bytes | None, limit: int
    ) -> OutboundResponse:
        if self._session is None:
            raise RuntimeError("OutboundClient used outside `async with`")
        where = origin(url)
        for hop in range(self.policy.max_redirects + 1):
            try:
                async with self._session.request(
                    method, url, headers=headers, data=body, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status not in _REDIRECTS or location is None:
                        content = await read_limited(response, limit)
                        return OutboundResponse(
                            response.status, response.headers, content, url, hop
                        )
            except OutboundError as exc:  # the guard's, from the connector or the read
                if isinstance(exc, OutboundRefused):
                    log.warning("[outbound %s] refused: %s", where, exc.reason)
                raise exc.at(where) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise OutboundFailed(where, _failure(exc, self.policy)) from None
            if hop == self.policy.max_redirects:
                break
            previous, url = url, _redirect_target(url, location, hop + 1)
            where = f"{origin(url)} (redirect {hop + 1} from {origin(previous)})"
            method, body = _redirected_method(response.status, method, body)
            headers = _redirected_headers(headers, previous, url, body is not None)
        raise OutboundFailed(where, f"more than {self.policy.max_redirects} redirects")


def _redirect_target(url: URL, location: str, hop: int) -> URL:
    try:
        joined = str(url.join(URL(location)))
    except ValueError:
        raise OutboundFailed(origin(url), f"redirect {hop} to something not a URL") from None
    try:
        target = check_url(joined, HTTP_SCHEMES)
    except OutboundRefused as exc:
        where = f"{exc.target} (redirect {hop} from {origin(url)})"
        log.warning("[outbound %s] refused: %s", where, exc.reason)
        raise exc.at(where) from None
    if url.scheme == "https" and target.scheme == "http":
        where = f"{origin(target)} (redirect {hop} from {origin(url)})"
        log.warning("[outbound %s] refused: a redirect from https to http", where)
        raise OutboundRefused(where, "a redirect from https to http")
    return target


def _redirected_method(status: int, method: str, body: bytes | None) -> tuple[str, bytes | None]:
    # As browsers do: 303 becomes a GET, and so does a POST answered 301 or 302.
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        return "GET", None
    return method, body


def _redirected_headers(
    headers: dict[str, str], previous: URL, target: URL, with_body: bool
) -> dict[str, str]:
    dropped = {"content-type", "content-length"} if not with_body else set()
    if origin(previous) != origin(target):  # credentials were meant for the first origin
        dropped.update(_CREDENTIAL_HEADERS)
    return {name: value for name, value in headers.items() if name.lower() not in dropped}


def _failure(exc: BaseException, policy: OutboundPolicy) -> str:
    """What went wrong, in words that never repeat the URL (aiohttp's may)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        return f"TLS certificate not trusted ({getattr(error, 'verify_message', None) or error})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake failed ({exc.os_error})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"no connection within {policy.connect_timeout_seconds:g} s"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"no data for {policy.read_timeout_seconds:g} s"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid response ({exc.message})"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return f"connection closed early ({exc})"
    return f"request failed ({type(exc).__name__})"
