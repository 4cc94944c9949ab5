"""Where a destination domain's mail goes: its route from relay.toml, or its MX hosts'
addresses in order (RFC 5321 5.1), public ones only unless `private_mx` allows others
(relay.public_address: the relay must not be made to probe inside its own network)."""

import ipaddress
import logging

from relay.delivery.mx import DnsPermanentError, DnsTemporaryError, MxResolver, NoMailHost
from relay.public_address import is_public

log = logging.getLogger(__name__)

Target = tuple[str, str, int]
"""(host name, address, port)."""


class MailHosts:
    def __init__(
        self,
        resolver: MxResolver,
        routes: dict[str, tuple[str, int]],
        port: int,
        private_mx: bool,
    ) -> None:
        self.resolver = resolver
        self.routes = routes
        self.port = port
        self.private_mx = private_mx

    async def targets(self, domain: str) -> list[Target]:
        """The hosts to try, in order; DnsPermanentError or DnsTemporaryError if none."""
        if domain in self.routes:
            host, port = self.routes[domain]
            return [(host, address, port) for address in await self._addresses(host)]
        targets = []
        refused: list[str] = []
        for mx in await self.resolver.mx_hosts(domain):
            try:
                addresses = await self.resolver.addresses(mx.name)
            except (DnsPermanentError, DnsTemporaryError) as exc:
                log.info("MX %s of %s has no usable address: %r", mx.name, domain, exc)
                continue
            if not self.private_mx:
                refused += [a for a in addresses if not is_public(a)]
                addresses = [a for a in addresses if is_public(a)]
            targets += [(mx.name, a, self.port) for a in addresses]
        if not targets and refused:
            raise NoMailHost(
                f"the MX hosts of {domain} resolve only to non-public addresses "
                f"({', '.join(sorted(set(refused))[:3])})"
            )
        if not targets:
            raise DnsTemporaryError(f"no address for any MX host of {domain}")
        return targets

    async def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return await self.resolver.addresses(host)
