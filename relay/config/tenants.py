"""Look-ups over the configured tenants: by login, by client address, by sending domain.

Built once per (re)load from the frozen `Config`, so the SMTP hot path does dictionary
look-ups only, however many tenants there are.
"""

import ipaddress
from dataclasses import dataclass

from relay.config.schema import Config, TenantSection


@dataclass(frozen=True)
class TrustedNetworks:
    """Which tenant trusts a client address without AUTH: per IP version, a dictionary of
    network address -> tenant for each prefix length in use, longest first. A look-up masks
    the address once per prefix length (at most 33 or 129, in practice a handful) instead
    of testing every tenant's networks, so MAIL costs the same with 10 or 10,000 tenants.
    The most specific network wins, as in a routing table."""

    by_prefix: dict[int, list[tuple[int, dict[int, str]]]]
    """IP version -> [(prefix length, {network address as int: tenant})], longest first."""

    @classmethod
    def of(cls, config: Config) -> "TrustedNetworks":
        tables: dict[tuple[int, int], dict[int, str]] = {}
        for tenant in config.tenants:
            for text in tenant.networks:
                net = ipaddress.ip_network(text, strict=False)
                table = tables.setdefault((net.version, net.prefixlen), {})
                table.setdefault(int(net.network_address), tenant.name)
        by_prefix: dict[int, list[tuple[int, dict[int, str]]]] = {4: [], 6: []}
        for (version, prefixlen), table in sorted(tables.items(), key=lambda i: -i[0][1]):
            by_prefix[version].append((prefixlen, table))
        return cls(by_prefix)

    def tenant_of(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        bits = ip.max_prefixlen
        value = int(ip)
        for prefixlen, table in self.by_prefix[ip.version]:
            mask = ((1 << prefixlen) - 1) << (bits - prefixlen)
            tenant = table.get(value & mask)
            if tenant is not None:
                return tenant
        return None


@dataclass(frozen=True)
class Tenants:
    by_name: dict[str, TenantSection]
    logins: dict[str, tuple[str, str]]
    """username -> (tenant name, argon2 hash)"""
    networks: TrustedNetworks

    @classmethod
    def from_config(cls, config: Config) -> "Tenants":
        logins = {
            c.username: (t.name, c.password_hash) for t in config.tenants for c in t.credentials
        }
        networks = TrustedNetworks.of(config)
        return cls({t.name: t for t in config.tenants}, logins, networks)

    def for_client(self, client_ip: str) -> str | None:
        """The tenant that trusts this client address without AUTH, if any."""
        try:
            ip = ipaddress.ip_address(client_ip)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return self.networks.tenant_of(ip)


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
