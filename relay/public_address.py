"""Only public addresses for what the relay connects to on the internet's say-so.

A destination's MX records and a tenant's webhook URL come from outside: an MX pointed at
127.0.0.1, 10.0.0.5 or 169.254.169.254 (a cloud's metadata service), or a webhook at one,
would make the relay a probe of its own network. So:
- MX hosts are connected to only at globally routable addresses (`ipaddress.is_global`),
  unless `[delivery] private_mx` is set; `[[routes]]` name their own host and may be
  private;
- webhooks go only to https URLs at public addresses, unless the tenant's
  `webhook_private` allows an in-house receiver. The name is resolved by the connection
  itself (`PublicResolver`), so the address checked is the address connected to: a name
  that answers a public address to a check and a private one to the connection (DNS
  rebinding) gains nothing.
"""

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver


def is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class NotPublic(OSError):
    """A name that resolves to no public address."""


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        found = await self._resolver.resolve(host, port, family)
        public = [entry for entry in found if is_public(entry["host"])]
        if not public:
            raise NotPublic(f"{host} resolves to no public address")
        return public  # type: ignore[return-value]

    async def close(self) -> None:
        await self._resolver.close()
