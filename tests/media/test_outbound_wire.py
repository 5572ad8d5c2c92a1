"""The outbound guard on the real wire: a local aiohttp server on 127.0.0.1, 127.0.0.2 and
::1 (one port), reached through `OutboundClient` as a webhook would be.

A user checks that a refused URL got a refusal saying why, and that the refused server
never saw a request (`hits`). Public-looking names resolve through a fake resolver to
127.0.0.2, a network the policy trusts, so that a redirect from there to 127.0.0.1 or
to a name resolving private shows the check at the hop.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import logging
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from media.outbound import (
    OutboundClient,
    OutboundFailed,
    OutboundPolicy,
    OutboundRefused,
    Resolver,
    ResponseTooLarge,
    create_session,
)

TRUSTED = (ipaddress.ip_network("127.0.0.2/32"),)
BIG = 2 * 1024**2


@dataclass
class Server:
    """The local server: its port, the requests each path got, a gate slow paths wait on."""

    port: int
    hits: Counter[str] = field(default_factory=Counter)
    gate: asyncio.Event = field(default_factory=asyncio.Event)


def dns(names: dict[str, list[str]]) -> Resolver:
    """A fake resolver answering `names`, and "not known" for any other."""

    async def resolver(host: str, port: int) -> Sequence[str]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return names[host]

    return resolver


FAKE_DNS = dns(
    {
        "public.example": ["127.0.0.2"],  # trusted: stands for a public receiver
        "other.example": ["127.0.0.2"],
        "internal.example": ["10.0.0.1"],
        "rebind.example": ["127.0.0.2", "127.0.0.1"],
    }
)


def app_for(server: Server) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        server.hits[path] += 1
        port = server.port
        redirects = {
            "/to-loopback": f"http://127.0.0.1:{port}/secret",
            "/to-internal": f"http://internal.example:{port}/secret",
            "/to-mapped": f"http://[::ffff:127.0.0.1]:{port}/secret",
            "/to-ipv6": f"http://[::1]:{port}/secret",
            "/to-file": "file:///etc/passwd",
            "/to-home": "/",
            "/to-other-origin": f"http://other.example:{port}/credentials",
            "/loop": "/loop",
        }
        if path in redirects:
            raise web.HTTPMovedPermanently(redirects[path])
        if path == "/credentials":
            return web.Response(text=request.headers.get("Authorization", "none"))
        if path == "/big":
            return web.Response(body=b"x" * BIG)
        if path == "/gzip":  # 2 KiB on the wire, 2 MiB once inflated
            packed = gzip.compress(bytes(BIG))
            return web.Response(body=packed, headers={"Content-Encoding": "gzip"})
        if path in ("/streamed-big", "/drip", "/slow"):
            response = web.StreamResponse()  # chunked: no Content-Length to trust
            await response.prepare(request)
            if path == "/slow":  # headers, then nothing
                await server.gate.wait()
            elif path == "/drip":  # a byte now and then, each well within the read timeout
                while not server.gate.is_set():
                    await response.write(b"x")
                    await asyncio.sleep(0.05)
            else:
                for _ in range(BIG // 65536):
                    await response.write(b"x" * 65536)
            return response
        return web.Response(text=f"hello from {request.host}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_sites(
    runner: web.AppRunner, hosts: Sequence[str], ssl_context: ssl.SSLContext | None = None
) -> int:
    """Listen on every one of `hosts` on one port; the port."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        sites = [web.TCPSite(runner, host, port, ssl_context=ssl_context) for host in hosts]
        try:
            for site in sites:
                await site.start()
        except OSError:
            for site in sites:
                await site.stop()
            continue
        return port
    raise RuntimeError("no port free on every host")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    box = Server(port=0)
    runner = web.AppRunner(app_for(box))
    await runner.setup()
    box.port = await start_sites(runner, ["127.0.0.1", "127.0.0.2", "::1"])
    yield box
    box.gate.set()
    await runner.cleanup()


async def fetch_refused(policy: OutboundPolicy, url: str) -> OutboundRefused:
    async with OutboundClient(policy, resolver=FAKE_DNS) as client:
        with pytest.raises(OutboundRefused) as refused:
            await client.fetch(url)
    return refused.value


# -- this host: refused by default, reached with allow_private --------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("localhost", "localhost resolves to "),  # 127.0.0.1 or ::1
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("[::1]", "::1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "a loopback address (127.0.0.1 in IPv4-mapped form)"),
    ],
)
async def test_this_host_is_refused_by_default(server: Server, host: str, reason: str) -> None:
    async with OutboundClient(OutboundPolicy()) as client:  # the system's DNS
        with pytest.raises(OutboundRefused) as refused:
            await client.fetch(f"http://{host}:{server.port}/hook")
    message = str(refused.value)
    assert message.startswith("outbound connection to http://")
    assert f":{server.port} refused: " in message
    assert reason in message
    assert "a loopback address" in message
    assert server.hits == {}


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"])
async def test_this_host_is_reached_with_allow_private(server: Server, host: str) -> None:
    async with OutboundClient(OutboundPolicy(allow_private=True)) as client:
        response = await client.fetch(f"http://{host}:{server.port}/hook", method="POST")
    assert response.status == 200
    assert response.body.startswith(b"hello from ")
    assert server.hits == {"/hook": 1}


async def test_a_refusal_and_its_log_never_show_credentials_path_or_query(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://user:hunter2@127.0.0.1:{server.port}/hooks/T0-token?sig=abc123"
    with caplog.at_level(logging.WARNING, logger="media.outbound"):
        refused = await fetch_refused(OutboundPolicy(), url)
    assert str(refused) == (
        f"outbound connection to http://127.0.0.1:{server.port} refused: "
        "127.0.0.1 is a loopback address"
    )
    assert caplog.messages == [
        f"[outbound http://127.0.0.1:{server.port}] refused: 127.0.0.1 is a loopback address"
    ]
    for secret in ("user", "hunter2", "T0-token", "abc123"):
        assert secret not in str(refused) and secret not in caplog.text


async def test_a_name_with_one_private_answer_is_refused_before_connecting(
    server: Server,
) -> None:
    refused = await fetch_refused(
        OutboundPolicy(trusted_networks=TRUSTED), f"http://rebind.example:{server.port}/"
    )
    assert "rebind.example resolves to 127.0.0.1, a loopback address" in str(refused)
    assert server.hits == {}


# -- redirects: each hop is checked ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "hop", "reason"),
    [
        ("/to-loopback", "http://127.0.0.1:{port}", "127.0.0.1 is a loopback address"),
        (
            "/to-internal",
            "http://internal.example:{port}",
            "internal.example resolves to 10.0.0.1, a private address",
        ),
        (
            "/to-mapped",
            "http://[::ffff:7f00:1]:{port}",
            "a loopback address (127.0.0.1 in IPv4-mapped form)",
        ),
        ("/to-ipv6", "http://[::1]:{port}", "::1 is a loopback address"),
    ],
)
async def test_a_redirect_to_a_private_address_is_refused_at_the_hop(
    server: Server, path: str, hop: str, reason: str
) -> None:
    policy = OutboundPolicy(trusted_networks=TRUSTED)
    refused = await fetch_refused(policy, f"http://public.example:{server.port}{path}")
    hop = hop.format(port=server.port)
    assert str(refused).startswith(
        f"outbound connection to {hop} (redirect 1 from http://public.example:{server.port}) "
        "refused: "
    )
    assert reason in str(refused)
    assert server.hits == {path: 1}  # the first hop was asked; /secret never was


async def test_a_redirect_to_another_scheme_is_refused(server: Server) -> None:
    policy = OutboundPolicy(trusted_networks=TRUSTED)
    refused = await fetch_refused(policy, f"http://public.example:{server.port}/to-file")
    assert str(refused) == (
        "outbound connection to a file URL (redirect 1 from "
        f"http://public.example:{server.port}) refused: only http, https are allowed"
    )


async def test_a_redirect_to_a_permitted_address_is_followed(server: Server) -> None:
    policy = OutboundPolicy(trusted_networks=TRUSTED)
    async with OutboundClient(policy, resolver=FAKE_DNS) as client:
        response = await client.fetch(f"http://public.example:{server.port}/to-home")
    assert (response.status, response.redirects) == (200, 1)
    assert response.body == f"hello from public.example:{server.port}".encode()
    assert server.hits == {"/to-home": 1, "/": 1}


async def test_credentials_are_not_carried_to_another_origin(server: Server) -> None:
    policy = OutboundPolicy(trusted_networks=TRUSTED)
    secret = {"Authorization": "Bearer webhook-secret"}
    async with OutboundClient(policy, resolver=FAKE_DNS) as client:
        base = f"http://public.example:{server.port}"
        same = await client.fetch(f"{base}/credentials", headers=secret)
        other = await client.fetch(f"{base}/to-other-origin", headers=secret)
    assert (same.body, other.body, other.redirects) == (b"Bearer webhook-secret", b"none", 1)


async def test_redirects_stop_at_the_limit(server: Server) -> None:
    policy = OutboundPolicy(trusted_networks=TRUSTED, max_redirects=3)
    async with OutboundClient(policy, resolver=FAKE_DNS) as client:
        with pytest.raises(OutboundFailed) as failed:
            await client.fetch(f"http://public.example:{server.port}/loop")
    assert str(failed.value) == (
        f"http://public.example:{server.port} (redirect 3 from "
        f"http://public.example:{server.port}): more than 3 redirects"
    )
    assert server.hits == {"/loop": 4}


async def test_a_session_following_redirects_itself_is_still_guarded(server: Server) -> None:
    # A caller using `create_session` directly lets aiohttp follow redirects: the
    # connector's checks refuse the hop all the same.
    policy = OutboundPolicy(trusted_networks=TRUSTED)
    async with create_session(policy, resolver=FAKE_DNS) as session:
        for path in ("/to-loopback", "/to-internal", "/to-mapped"):
            with pytest.raises(OutboundRefused, match="refused: "):
                await session.get(f"http://public.example:{server.port}{path}")
    assert server.hits == {"/to-loopback": 1, "/to-internal": 1, "/to-mapped": 1}


# -- what is read back: size and time limits ---------------------------------------------


async def test_a_response_over_the_limit_is_refused(server: Server) -> None:
    policy = OutboundPolicy(allow_private=True, max_response_bytes=BIG - 1)
    base = f"http://127.0.0.1:{server.port}"
    async with OutboundClient(policy) as client:
        with pytest.raises(ResponseTooLarge) as declared:
            await client.fetch(f"{base}/big")
        with pytest.raises(ResponseTooLarge) as streamed:
            await client.fetch(f"{base}/streamed-big")
        with pytest.raises(ResponseTooLarge) as inflated:
            await client.fetch(f"{base}/gzip")
        whole = await client.fetch(f"{base}/streamed-big", max_bytes=BIG)
    assert str(inflated.value) == f"{base}: the response is over the limit of {BIG - 1} bytes"
    assert str(declared.value) == (
        f"{base}: the response is {BIG} bytes, over the limit of {BIG - 1}"
    )
    assert str(streamed.value) == f"{base}: the response is over the limit of {BIG - 1} bytes"
    assert len(whole.body) == BIG


async def test_a_server_that_stops_sending_times_out(server: Server) -> None:
    policy = OutboundPolicy(allow_private=True, read_timeout_seconds=0.2)
    async with OutboundClient(policy) as client:
        with pytest.raises(OutboundFailed) as failed:
            await client.fetch(f"http://127.0.0.1:{server.port}/slow")
    assert str(failed.value) == f"http://127.0.0.1:{server.port}: no data for 0.2 s"


async def test_a_server_that_drips_hits_the_total_timeout(server: Server) -> None:
    policy = OutboundPolicy(allow_private=True, read_timeout_seconds=5.0, total_timeout_seconds=0.3)
    async with OutboundClient(policy) as client:
        with pytest.raises(OutboundFailed) as failed:
            await client.fetch(f"http://127.0.0.1:{server.port}/drip")
    assert str(failed.value) == (
        f"http://127.0.0.1:{server.port}: no complete response within 0.3 s"
    )


async def test_an_unreachable_receiver_fails_saying_so(server: Server) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = int(probe.getsockname()[1])  # closed again once the block ends
    policy = OutboundPolicy(allow_private=True)
    async with OutboundClient(policy, resolver=FAKE_DNS) as client:
        with pytest.raises(OutboundFailed) as unknown:
            await client.fetch("http://nowhere.example/hook")
        with pytest.raises(OutboundFailed) as closed:
            await client.fetch(f"http://127.0.0.1:{closed_port}/hook")
    assert str(unknown.value) == (
        "http://nowhere.example:80: nowhere.example does not resolve (Name or service not known)"
    )
    assert str(closed.value).startswith(f"http://127.0.0.1:{closed_port}: cannot connect (")


# -- TLS ---------------------------------------------------------------------------------


@dataclass
class LocalCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(directory: Path) -> LocalCA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("onair test CA"))
        .issuer_name(_name("onair test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return LocalCA(cert, key, path)


def server_context(
    ca: LocalCA, directory: Path, names: Sequence[x509.GeneralName]
) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("onair test server"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[Server, LocalCA]]:
    """An HTTPS server on 127.0.0.1 whose certificate (127.0.0.1, localhost) the test CA signed."""
    ca = make_ca(tmp_path)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    box = Server(port=0)
    runner = web.AppRunner(app_for(box))
    await runner.setup()
    box.port = await start_sites(runner, ["127.0.0.1"], server_context(ca, tmp_path, names))
    yield box, ca
    box.gate.set()
    await runner.cleanup()


async def test_tls_is_refused_without_the_ca_file(tls_server: tuple[Server, LocalCA]) -> None:
    server, _ = tls_server
    async with OutboundClient(OutboundPolicy(allow_private=True)) as client:
        with pytest.raises(OutboundFailed) as failed:
            await client.fetch(f"https://127.0.0.1:{server.port}/hook")
    assert str(failed.value) == (
        f"https://127.0.0.1:{server.port}: TLS certificate not trusted "
        "(unable to get local issuer certificate)"
    )
    assert server.hits == {}


async def test_tls_is_accepted_with_the_ca_file(tls_server: tuple[Server, LocalCA]) -> None:
    server, ca = tls_server
    policy = OutboundPolicy.from_env(
        {"ONAIR_OUTBOUND_ALLOW_PRIVATE": "true", "ONAIR_OUTBOUND_CA_FILE": str(ca.path)}
    )
    async with OutboundClient(policy) as client:
        by_ip = await client.fetch(f"https://127.0.0.1:{server.port}/hook")
        by_name = await client.fetch(f"https://localhost:{server.port}/hook")
    assert (by_ip.status, by_name.status) == (200, 200)
    assert server.hits == {"/hook": 2}


async def test_tls_checks_the_host_name(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    box = Server(port=0)
    runner = web.AppRunner(app_for(box))
    await runner.setup()
    context = server_context(ca, tmp_path, [x509.DNSName("other.example")])
    try:
        box.port = await start_sites(runner, ["127.0.0.1"], context)
        policy = OutboundPolicy(allow_private=True, ca_file=ca.path)
        async with OutboundClient(policy) as client:
            with pytest.raises(OutboundFailed) as failed:
                await client.fetch(f"https://127.0.0.1:{box.port}/hook")
    finally:
        await runner.cleanup()
    assert str(failed.value) == (
        f"https://127.0.0.1:{box.port}: TLS certificate not trusted "
        "(IP address mismatch, certificate is not valid for '127.0.0.1'.)"
    )
    assert box.hits == {}


async def test_a_redirect_from_https_to_http_is_refused(
    tls_server: tuple[Server, LocalCA],
) -> None:
    server, ca = tls_server
    policy = OutboundPolicy(allow_private=True, ca_file=ca.path)
    async with OutboundClient(policy) as client:
        with pytest.raises(OutboundRefused) as refused:
            await client.fetch(f"https://127.0.0.1:{server.port}/to-loopback")
    assert str(refused.value) == (
        f"outbound connection to http://127.0.0.1:{server.port} (redirect 1 from "
        f"https://127.0.0.1:{server.port}) refused: a redirect from https to http"
    )
    assert server.hits == {"/to-loopback": 1}
