"""What a config may say that is well formed but unsafe, refused at load like a typo.

Each check names the key that is wrong (`tenants[1].domains[0]`):
- a sending domain claimed by two tenants, or inside another tenant's domain: the second
  tenant would send as the first and be signed with its DKIM key;
- a public suffix (`com`, `co.uk`, `github.io`) as a sending domain: every registrant
  under it would be the tenant's;
- a trusted network wider than `[smtp] min_network_prefix_ipv4` / `_ipv6`: a `0.0.0.0/0`
  makes the relay an open relay for that tenant (P-AUTH);
- the shipped demo credentials on a listener that is not loopback: anyone could send as
  the demo tenant.
"""

import ipaddress
from collections.abc import Iterator

from relay.config.schema import Config, split_host_port
from relay.psl import is_public_suffix

DEMO_PASSWORD_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$/TQK1CiRUqswge7L88l8zQ$"
    "PzOCKD2T5QubDUCxfITyGGdvevk881YNcGmLJ3/lkB8"
)
"""The hash of `demo-password` that the shipped relay.toml carries."""


def _loopback(address: str) -> bool:
    host, _ = split_host_port(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _DomainOwners:
    """The sending domains seen so far, indexed by every parent domain, so that a domain's
    clashes (the same domain, a parent, a subdomain) are found by looking up its own labels,
    not by comparing it with every other domain: 10,000 tenants load in linear time."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}  # domain -> tenant, in the order first seen
        self._order: dict[str, int] = {}
        self._under: dict[str, list[str]] = {}  # parent -> the domains seen below it

    def clashes(self, domain: str, tenant: str) -> list[tuple[str, str]]:
        """(other domain, its tenant) for each domain of another tenant that is `domain`,
        contains it or lies inside it; in the order they were first seen."""
        found = {p for p in _parents(domain) if p in self._owner}
        found.update(self._under.get(domain, ()))
        if domain in self._owner:
            found.add(domain)
        return [
            (other, self._owner[other])
            for other in sorted(found, key=self._order.__getitem__)
            if self._owner[other] != tenant
        ]

    def add(self, domain: str, tenant: str) -> None:
        if domain in self._owner:
            return
        self._owner[domain] = tenant
        self._order[domain] = len(self._order)
        for parent in _parents(domain):
            self._under.setdefault(parent, []).append(domain)


def _parents(domain: str) -> list[str]:
    """`mail.news.example.com` -> `news.example.com`, `example.com`, `com`."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


def unsafe(config: Config) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(key path, why) for everything unsafe in `config`."""
    domains = _DomainOwners()
    for t, tenant in enumerate(config.tenants):
        for d, domain in enumerate(tenant.domains):
            loc: tuple[str | int, ...] = ("tenants", t, "domains", d)
            if is_public_suffix(domain):
                yield loc, f"{domain} is a public suffix: a sending domain must be registrable"
            for other, name in domains.clashes(domain, tenant.name):
                if domain == other:
                    yield loc, f"{domain} is also a domain of tenant {name}"
                else:
                    yield loc, f"{domain} overlaps {other}, a domain of tenant {name}"
            domains.add(domain, tenant.name)
        for n, network in enumerate(tenant.networks):
            net = ipaddress.ip_network(network, strict=False)
            least = (
                config.smtp.min_network_prefix_ipv4
                if net.version == 4
                else config.smtp.min_network_prefix_ipv6
            )
            if net.prefixlen < least:
                yield (
                    ("tenants", t, "networks", n),
                    f"{network} is wider than /{least} ([smtp] min_network_prefix_ipv"
                    f"{net.version}): trusted networks send without AUTH",
                )
    public = [x.name for x in config.listeners if not _loopback(x.address)]
    if public:
        for t, tenant in enumerate(config.tenants):
            for c, credential in enumerate(tenant.credentials):
                if credential.password_hash == DEMO_PASSWORD_HASH:
                    yield (
                        ("tenants", t, "credentials", c, "password_hash"),
                        "the demo password, with listeners on non-loopback addresses "
                        f"({', '.join(public)}): make a new one with relay hash-password",
                    )
