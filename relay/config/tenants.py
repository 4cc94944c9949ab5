"""Look-ups over the configured tenants: by login, by client address, by sending domain.

Built once per (re)load from the frozen `Config`, so the SMTP hot path does dictionary and
list look-ups only.
"""

import ipaddress
from dataclasses import dataclass

from relay.config.schema import Config, TenantSection


@dataclass(frozen=True)
class Tenants:
    by_name: dict[str, TenantSection]
    logins: dict[str, tuple[str, str]]
    """username -> (tenant name, argon2 hash)"""
    networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]
    """(network, tenant name), most specific first"""

    @classmethod
    def from_config(cls, config: Config) -> "Tenants":
        logins = {
            c.username: (t.name, c.password_hash) for t in config.tenants for c in t.credentials
        }
        networks = [
            (ipaddress.ip_network(n, strict=False), t.name)
            for t in config.tenants
            for n in t.networks
        ]
        networks.sort(key=lambda item: item[0].prefixlen, reverse=True)
        return cls({t.name: t for t in config.tenants}, logins, networks)

    def for_client(self, client_ip: str) -> str | None:
        """The tenant that trusts this client address without AUTH, if any."""
        try:
            ip = ipaddress.ip_address(client_ip)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        for network, tenant in self.networks:
            if ip.version == network.version and ip in network:
                return tenant
        return None


def is_within(domain: str, parent: str) -> bool:
    """`domain` is `parent` or a subdomain of it (both A-labels, lower case)."""
    return domain == parent or domain.endswith("." + parent)


def owning_domain(tenant: TenantSection, domain: str) -> str | None:
    """The tenant domain that `domain` (an A-label) is, or is under; the longest wins."""
    domain = domain.lower()
    matches = [d for d in tenant.domains if is_within(domain, d)]
    return max(matches, key=len) if matches else None


def owns_domain(tenant: TenantSection, domain: str) -> bool:
    """True if `domain` (an A-label) is one of the tenant's domains or a subdomain of one."""
    return owning_domain(tenant, domain) is not None
