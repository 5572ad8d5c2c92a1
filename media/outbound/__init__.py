"""The one door out: every connection onair opens to an address a user supplied.

Webhooks now, restreams (RTMP, SRT) and HLS pull later (STYLE.md "One door out"), so
the rule against server-side request forgery is written once, here:

- a URL is opened only with an allowed scheme (http, https, rtmp, rtmps, srt), a host,
  an unambiguous authority and no non-canonical numeric host (`127.1`, `2130706433`);
- every address a name resolves to is checked, and one refused address refuses the
  name: a DNS answer mixing a public and a private address is a rebinding trick;
- loopback, private, link-local, multicast, reserved, unspecified (`0.0.0.0/8`) and
  carrier-grade NAT (`100.64.0.0/10`) addresses, and IPv6 forms that embed one
  (`::ffff:127.0.0.1`, NAT64, 6to4, Teredo), are refused unless the policy allows
  private addresses (`ONAIR_OUTBOUND_ALLOW_PRIVATE`: development, tests); cloud
  metadata addresses are refused always;
- HTTP checks at connect time, in the connector's resolver and its socket factory, so
  every connection (each redirect hop, each segment URL, each retry) is checked, not
  only the first URL; a non-HTTP caller connects to the address `connect_address`
  checked, never to the name again;
- `OutboundClient.fetch` follows redirects itself, up to the policy's limit: each hop's
  scheme checked, never from https to http, credential headers not carried to another
  origin;
- everything read back has timeouts and a byte limit; TLS is verified against the
  system store plus `ONAIR_OUTBOUND_CA_FILE`.

Modules: `addresses` (the pure rules), `policy` (`OutboundPolicy`, the errors),
`guard` (URLs, names, `connect_address`), `http` (`OutboundClient`, `create_session`).

Messages and logs name an origin (scheme, host, port) and an address, never a URL's
credentials, path or query: those carry secrets (a webhook token, a stream key).
"""

from .addresses import METADATA_ADDRESSES, IPAddress, IPNetwork, address_refused
from .guard import (
    ALL_SCHEMES,
    HTTP_SCHEMES,
    STREAM_SCHEMES,
    CheckedAddress,
    Resolver,
    check_url,
    checked_addresses,
    connect_address,
    connect_address_blocking,
    origin,
    resolve,
    system_resolver,
)
from .http import OutboundClient, OutboundResponse, create_session, read_limited
from .policy import (
    ALLOW_PRIVATE_ENV,
    CA_FILE_ENV,
    OutboundConfigError,
    OutboundError,
    OutboundFailed,
    OutboundPolicy,
    OutboundRefused,
    ResponseTooLarge,
)

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "ALL_SCHEMES",
    "CA_FILE_ENV",
    "HTTP_SCHEMES",
    "METADATA_ADDRESSES",
    "STREAM_SCHEMES",
    "CheckedAddress",
    "IPAddress",
    "IPNetwork",
    "OutboundClient",
    "OutboundConfigError",
    "OutboundError",
    "OutboundFailed",
    "OutboundPolicy",
    "OutboundRefused",
    "OutboundResponse",
    "Resolver",
    "ResponseTooLarge",
    "address_refused",
    "check_url",
    "checked_addresses",
    "connect_address",
    "connect_address_blocking",
    "create_session",
    "origin",
    "read_limited",
    "resolve",
    "system_resolver",
]
