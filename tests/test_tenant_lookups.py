"""Look-ups over the configured tenants that the SMTP path and the loader make, checked
against the plain definition they replace (a scan of every tenant)."""

import ipaddress

from relay.config.safety import unsafe
from relay.config.schema import Config, TenantSection
from relay.config.tenants import Tenants

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"


def _config(*tenants: dict[str, object]) -> Config:
    return Config(
        listeners=[{"name": "submission", "address": "127.0.0.1:2587"}],  # type: ignore[list-item]
        tenants=[
            TenantSection.model_validate(
                {"credentials": [{"username": t["name"], "password_hash": HASH}], **t}
            )
            for t in tenants
        ],
    )


def _scan(config: Config, address: str) -> str | None:
    """The definition: the most specific trusted network containing the address wins; of
    two equal ones, the tenant listed first."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    best: tuple[int, str] | None = None
    for tenant in config.tenants:
        for text in tenant.networks:
            net = ipaddress.ip_network(text, strict=False)
            if ip.version == net.version and ip in net:
                if best is None or net.prefixlen > best[0]:
                    best = (net.prefixlen, tenant.name)
    return best[1] if best else None


def test_the_most_specific_network_names_the_tenant() -> None:
    config = _config(
        {"name": "wide", "domains": ["wide.example"], "networks": ["10.0.0.0/16", "2001:db8::/48"]},
        {"name": "narrow", "domains": ["narrow.example"], "networks": ["10.0.5.0/24"]},
        {"name": "host", "domains": ["host.example"], "networks": ["10.0.5.7", "2001:db8::1/128"]},
        {"name": "same", "domains": ["same.example"], "networks": ["10.0.5.0/24"]},
    )
    tenants = Tenants.from_config(config)
    addresses = ["10.0.5.7", "10.0.5.8", "10.0.6.1", "10.1.0.1", "::ffff:10.0.5.9",
                 "2001:db8::1", "2001:db8::2", "2001:db9::1", "not an address"]  # fmt: skip
    found = {a: tenants.for_client(a) for a in addresses}
    assert found == {
        "10.0.5.7": "host",
        "10.0.5.8": "narrow",  # listed before "same", with the same network
        "10.0.6.1": "wide",
        "10.1.0.1": None,
        "::ffff:10.0.5.9": "narrow",
        "2001:db8::1": "host",
        "2001:db8::2": "wide",
        "2001:db9::1": None,
        "not an address": None,
    }
    assert all(found[a] == _scan(config, a) for a in addresses[:-1])


def test_clashing_domains_are_found_among_many_tenants() -> None:
    """Each clash is reported once, whichever order the tenants come in, with 2,000 tenants
    that clash with nobody around them."""
    many = [{"name": f"t{i}", "domains": [f"d{i}.example"]} for i in range(2000)]
    config = _config(
        {"name": "first", "domains": ["shop.example", "news.brand.example"]},
        *many,
        {"name": "second", "domains": ["mail.shop.example", "brand.example", "shop.example"]},
    )
    problems = [(key[1:], why) for key, why in unsafe(config)]
    assert problems == [
        ((2001, "domains", 0), "mail.shop.example overlaps shop.example, a domain of tenant first"),
        (
            (2001, "domains", 1),
            "brand.example overlaps news.brand.example, a domain of tenant first",
        ),
        ((2001, "domains", 2), "shop.example is also a domain of tenant first"),
    ]
