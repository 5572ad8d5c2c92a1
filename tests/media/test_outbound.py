"""The outbound guard's rules, one component at a time: addresses, URLs, names, config.

Names resolve through a fake resolver here (`evil.example` -> 10.0.0.1); the real
wire (a local server, redirects, TLS, limits) is in `test_outbound_wire.py`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from api.settings import ConfigError, load_settings
from media.outbound import (
    CheckedAddress,
    OutboundConfigError,
    OutboundFailed,
    OutboundPolicy,
    OutboundRefused,
    address_refused,
    check_url,
    connect_address,
    connect_address_blocking,
    resolve,
)

DEFAULT = OutboundPolicy()
PRIVATE_OK = OutboundPolicy(allow_private=True)

DNS: dict[str, list[str]] = {
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "evil.example": ["10.0.0.1"],
    "mixed.example": ["93.184.216.34", "10.0.0.1"],  # a rebinding answer
    "loopback6.example": ["::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
}


async def fake_resolver(host: str, port: int) -> Sequence[str]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


def teredo(client: str) -> str:
    """A Teredo address (2001::/32) whose client is `client` (stored inverted)."""
    server = int(ipaddress.IPv4Address("65.54.227.120"))
    inverted = ~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | inverted))


REFUSED = [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.1.1", "a link-local address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("169.254.170.2", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("168.63.129.16", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.64.0.1", "a carrier-grade NAT address (100.64.0.0/10)"),
    ("0.0.0.0", "an unspecified address (it reaches this host)"),
    ("0.1.2.3", "an unspecified address (it reaches this host)"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("240.0.0.1", "a private address"),
    ("255.255.255.255", "a private address"),
    ("192.0.2.7", "a private address"),  # documentation
    ("::1", "a loopback address"),
    ("::", "an unspecified address (it reaches this host)"),
    ("fe80::1", "a link-local address"),
    ("fe80::1%eth0", "a link-local address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("fec0::1", "a site-local address"),
    ("ff02::1", "a multicast address"),
    ("2001:db8::1", "a private address"),
    ("64:ff9b:1::a", "a local-use NAT64 address"),
    ("::ffff:127.0.0.1", "a loopback address (127.0.0.1 in IPv4-mapped form)"),
    ("::ffff:10.1.2.3", "a private address (10.1.2.3 in IPv4-mapped form)"),
    ("::ffff:169.254.169.254", "a cloud metadata address (169.254.169.254 in IPv4-mapped form)"),
    ("64:ff9b::127.0.0.1", "a loopback address (127.0.0.1 in NAT64 form)"),
    ("64:ff9b::10.0.0.1", "a private address (10.0.0.1 in NAT64 form)"),
    ("2002:7f00:1::", "a loopback address (127.0.0.1 in 6to4 form)"),
    ("2002:c0a8:101::1", "a private address (192.168.1.1 in 6to4 form)"),
    (teredo("10.0.0.1"), "a private address (10.0.0.1 in Teredo form)"),
    (teredo("8.8.8.8"), "a private address"),  # Teredo itself is not public
    ("::127.0.0.1", "a loopback address (127.0.0.1 in IPv4-compatible form)"),
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_a_non_public_address_is_refused_and_says_what_it_is(address: str, reason: str) -> None:
    assert address_refused(address) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_is_permitted(address: str) -> None:
    assert address_refused(address) is None
    assert address_refused(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "::1", "::ffff:127.0.0.1", "fe80::1", "100.64.0.1"]
)
def test_allow_private_permits_local_addresses(address: str) -> None:
    assert address_refused(address, allow_private=True) is None
    assert PRIVATE_OK.refusal(address) is None


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"]
)
def test_metadata_addresses_are_refused_even_with_allow_private(address: str) -> None:
    assert PRIVATE_OK.refusal(address) is not None
    assert "cloud metadata address" in str(PRIVATE_OK.refusal(address))
    trusting = OutboundPolicy(trusted_networks=(ipaddress.ip_network("169.254.0.0/16"),))
    assert trusting.refusal(address) is not None


def test_a_trusted_network_is_permitted_and_nothing_beside_it() -> None:
    policy = OutboundPolicy(trusted_networks=(ipaddress.ip_network("10.1.0.0/16"),))
    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("::ffff:10.1.2.3") is None
    assert policy.refusal("10.2.0.1") == "a private address"
    assert policy.refusal("127.0.0.1") == "a loopback address"


# -- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "outbound connection to a file URL refused: only"),
        ("gopher://evil.example:70/", "a gopher URL refused: only http, https, rtmp"),
        ("javascript:alert(1)", "a javascript URL refused: only"),
        ("//evil.example/x", "a relative URL refused: only"),
        ("http:///path", "a http URL refused: it has no host"),
        ("http://a@b@127.0.0.1/", "http://127.0.0.1 refused: its authority has more than one '@'"),
        ("http://127.1/", "http://127.1 refused: its host is not a canonical IP address"),
        ("http://2130706433/", "refused: its host is not a canonical IP address"),
        ("http://0x7f000001/", "refused: its host is not a canonical IP address"),
        ("http://127.000.000.001/", "refused: its host is not a canonical IP address"),
        ("http://127.0.0.1%2e/", "http://127.0.0.1%2e refused: its host is not a valid host"),
        ("https://evil.example:0/", "refused: port 0 is not a port to connect to"),
        ("http://evil.example:99999/", "a URL refused: it is not a valid URL"),
        ("http://evil.example\\@127.0.0.1/", "it has whitespace, a control character or a"),
        ("http://evil.example /", "it has whitespace, a control character or a backslash"),
        ("http://evil.example\r\nHost: x/", "it has whitespace, a control character"),
        ("srt://evil.example?streamid=x", "srt://evil.example refused: a srt URL needs a port"),
    ],
)
def test_a_url_the_guard_cannot_open_is_refused_with_its_reason(url: str, message: str) -> None:
    with pytest.raises(OutboundRefused, match=r"^outbound connection to ") as refused:
        check_url(url)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("https://hooks.example.com/services/T0/B0/secret?x=1", 443),
        ("http://hooks.example.com/", 80),
        ("http://[::1]:8080/", 8080),
        ("rtmp://live.example/app/key", 1935),
        ("rtmps://live.example/app/key", 443),
        ("srt://live.example:9000?streamid=publish:key", 9000),
        ("HTTPS://Hooks.Example.com./x", 443),
        ("http://ёлка.рф/", 80),
    ],
)
def test_a_url_the_guard_may_open_gets_its_default_port(url: str, port: int) -> None:
    assert check_url(url).port == port


def test_a_webhook_url_may_not_be_an_rtmp_one() -> None:
    with pytest.raises(OutboundRefused, match="a rtmp URL refused: only http, https are allowed"):
        check_url("rtmp://live.example/app/key", {"http", "https"})


def test_a_refusal_never_repeats_credentials_path_or_query() -> None:
    with pytest.raises(OutboundRefused) as refused:
        check_url("ftp://user:hunter2@files.example/token-path?sig=abc123")
    for secret in ("user", "hunter2", "token-path", "abc123"):
        assert secret not in str(refused.value)


# -- names ----------------------------------------------------------------------------


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    with pytest.raises(OutboundRefused) as refused:
        await resolve("evil.example", 443, DEFAULT, fake_resolver)
    assert str(refused.value) == (
        "outbound connection to evil.example:443 refused: "
        "evil.example resolves to 10.0.0.1, a private address"
    )
    assert refused.value.address == "10.0.0.1"


async def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    with pytest.raises(OutboundRefused, match=r"mixed.example resolves to 10\.0\.0\.1, a private"):
        await resolve("mixed.example", 80, DEFAULT, fake_resolver)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("loopback6.example", "loopback6.example resolves to ::1, a loopback address"),
        ("mapped.example", "a loopback address (127.0.0.1 in IPv4-mapped form)"),
        ("metadata.example", "resolves to 169.254.169.254, a cloud metadata address"),
    ],
)
async def test_ipv6_and_metadata_answers_are_refused(host: str, message: str) -> None:
    with pytest.raises(OutboundRefused) as refused:
        await resolve(host, 80, DEFAULT, fake_resolver)
    assert message in str(refused.value)


async def test_a_public_name_resolves_to_all_its_addresses() -> None:
    addresses = await resolve("public.example", 443, DEFAULT, fake_resolver)
    assert [str(a) for a in addresses] == DNS["public.example"]


async def test_an_unknown_name_fails_saying_so() -> None:
    with pytest.raises(OutboundFailed, match=r"nowhere\.example does not resolve"):
        await resolve("nowhere.example", 443, DEFAULT, fake_resolver)


async def test_an_ip_literal_is_checked_without_asking_the_resolver() -> None:
    async def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError("a literal must not be resolved")

    with pytest.raises(OutboundRefused, match=r"::ffff:7f00:1 is a loopback address"):
        await resolve("::ffff:127.0.0.1", 80, DEFAULT, no_dns)
    assert [str(a) for a in await resolve("8.8.8.8", 53, DEFAULT, no_dns)] == ["8.8.8.8"]


async def test_connect_address_gives_the_checked_ip_of_a_stream_url() -> None:
    url = "srt://public.example:9000?streamid=#!::r=live/stream-key,m=publish"
    checked = await connect_address(url, DEFAULT, resolver=fake_resolver)
    assert checked == CheckedAddress("93.184.216.34", 9000)
    assert checked.netloc == "93.184.216.34:9000"
    assert CheckedAddress("::1", 1935).netloc == "[::1]:1935"


async def test_connect_address_refuses_a_private_restream_without_its_secrets() -> None:
    with pytest.raises(OutboundRefused) as refused:
        await connect_address(
            "rtmp://user:hunter2@evil.example/live/stream-key", DEFAULT, resolver=fake_resolver
        )
    assert str(refused.value) == (
        "outbound connection to rtmp://evil.example:1935 refused: "
        "evil.example resolves to 10.0.0.1, a private address"
    )
    with pytest.raises(OutboundRefused, match="a http URL refused: only rtmp, rtmps, srt"):
        await connect_address("http://public.example/", DEFAULT, resolver=fake_resolver)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rtmp://localhost/live/key", "localhost resolves to "),  # 127.0.0.1 or ::1
        ("rtmp://127.0.0.1/live/key", "127.0.0.1 is a loopback address"),
        ("srt://[::1]:9000?streamid=key", "::1 is a loopback address"),
        ("rtmp://[::ffff:127.0.0.1]/live/key", "(127.0.0.1 in IPv4-mapped form)"),
    ],
)
def test_connect_address_blocking_refuses_this_host(url: str, message: str) -> None:
    with pytest.raises(OutboundRefused) as refused:
        connect_address_blocking(url, DEFAULT)
    assert message in str(refused.value)
    assert "a loopback address" in str(refused.value)
    assert "key" not in str(refused.value)
    assert connect_address_blocking(url, PRIVATE_OK).ip in ("127.0.0.1", "::1", "::ffff:7f00:1")


# -- configuration --------------------------------------------------------------------


def test_the_policy_defaults_to_refusing_private_addresses() -> None:
    assert OutboundPolicy.from_env({}) == OutboundPolicy()
    assert OutboundPolicy().allow_private is False
    assert OutboundPolicy().ca_file is None
    assert load_settings({}).outbound == OutboundPolicy()


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), ("1", True)])
def test_allow_private_is_read_from_the_environment(value: str, expected: bool) -> None:
    environ = {"ONAIR_OUTBOUND_ALLOW_PRIVATE": value}
    assert OutboundPolicy.from_env(environ).allow_private is expected
    assert load_settings(environ).outbound.allow_private is expected


def test_a_wrong_allow_private_value_names_the_variable() -> None:
    message = "ONAIR_OUTBOUND_ALLOW_PRIVATE='maybe': true or false (also 1/0, yes/no, on/off)"
    with pytest.raises(OutboundConfigError) as wrong:
        OutboundPolicy.from_env({"ONAIR_OUTBOUND_ALLOW_PRIVATE": "maybe"})
    assert str(wrong.value) == message
    with pytest.raises(ConfigError) as wrong_setting:
        load_settings({"ONAIR_OUTBOUND_ALLOW_PRIVATE": "maybe"})
    assert str(wrong_setting.value) == message


def test_a_ca_file_must_exist_and_hold_certificates(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=rf"^ONAIR_OUTBOUND_CA_FILE='{missing}': no such file$"):
        load_settings({"ONAIR_OUTBOUND_CA_FILE": str(missing)})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"ONAIR_OUTBOUND_CA_FILE=.*: not a PEM file of CA"):
        load_settings({"ONAIR_OUTBOUND_CA_FILE": str(garbage)})
