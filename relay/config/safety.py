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
from relay.config.tenants import is_within
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


def unsafe(config: Config) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(key path, why) for everything unsafe in `config`."""
    owners: dict[str, tuple[str, int, int]] = {}
    for t, tenant in enumerate(config.tenants):
        for d, domain in enumerate(tenant.domains):
            loc: tuple[str | int, ...] = ("tenants", t, "domains", d)
            if is_public_suffix(domain):
                yield loc, f"{domain} is a public suffix: a sending domain must be registrable"
            for other, (name, _, _) in owners.items():
                if name == tenant.name:
                    continue
                if domain == other:
                    yield loc, f"{domain} is also a domain of tenant {name}"
                elif is_within(domain, other) or is_within(other, domain):
                    yield loc, f"{domain} overlaps {other}, a domain of tenant {name}"
            owners.setdefault(domain, (tenant.name, t, d))
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
