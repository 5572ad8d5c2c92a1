"""Which IP addresses outbound connections may reach: pure rules over `ipaddress`.

Not public, so refused: loopback, private, link-local, multicast, reserved, unspecified
(`0.0.0.0/8`, which reaches this host), carrier-grade NAT (`100.64.0.0/10`), IPv6
site-local and local-use NAT64, and IPv6 forms embedding such an IPv4 address. Cloud
metadata addresses are refused whatever the policy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never permitted, whatever the policy: a metadata service hands out the host's cloud
# credentials to whoever asks from the host, the first prize of a request forgery.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address, hence named here)
        "192.0.0.192",  # Oracle Cloud, legacy
    )
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # a connect to it reaches this host
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def address_refused(
    address: str | IPAddress, *, allow_private: bool = False, trusted: Iterable[IPNetwork] = ()
) -> str | None:
    """Why `address` must not be connected to ("a loopback address"), or None when it may.

    IPv6 forms that carry an IPv4 address are judged by it: IPv4-mapped (`::ffff:a.b.c.d`)
    and NAT64 (`64:ff9b::a.b.c.d`) reach it; 6to4, Teredo and the deprecated
    IPv4-compatible form are refused when it is not public, and judged as IPv6 besides.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))  # fe80::1%eth0: the zone changes nothing here
    embedded = _embedded_ipv4(ip)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if embedded is not None and embedded[1] in METADATA_ADDRESSES:
        return f"a cloud metadata address ({embedded[1]} in {embedded[0]} form)"
    trusted = tuple(trusted)
    if allow_private or any(ip in network for network in trusted):
        return None
    if embedded is not None:
        form, ipv4 = embedded
        if any(ipv4 in network for network in trusted):
            return None
        reason = _not_public(ipv4)
        if reason is not None:
            return f"{reason} ({ipv4} in {form} form)"
        if form in ("IPv4-mapped", "NAT64"):
            return None
    return _not_public(ip)


def _embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None


def _not_public(ip: IPAddress) -> str | None:
    # In order: the first name that fits says most (127.0.0.1 is also "private").
    if ip in _THIS_NETWORK or ip.is_unspecified:
        return "an unspecified address (it reaches this host)"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` is literally (`127.0.0.1`, `[::1]`), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
