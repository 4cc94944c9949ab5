"""The client address of an HTTP request, through the proxies the admin trusts.

Behind the TLS-terminating proxy docs/policy.md recommends, every request comes from the proxy:
per-client limits and lockouts would then count everyone as one client, and one attacker
could lock every tenant out. `[http] trusted_proxies` names the proxies' networks; for a
request from one of them the client is the right-most address of `X-Forwarded-For` that is
not itself a trusted proxy (what the proxy saw), and for any other request the peer itself:
a client cannot choose its own address by sending the header.
"""

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: web.Request) -> str:
    peer = request.remote or ""
    trusted: Sequence[Network] = request.app.get(TRUSTED_PROXIES, ())
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _within(hop, trusted):
            return hop.strip("[]")
    return peer
