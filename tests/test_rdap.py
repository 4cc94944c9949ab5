"""P-WHOIS: the registrant of a sending domain, seen over RDAP, is not a privacy proxy.

The answers come from a real HTTP server on loopback shaped like the registries' and
registrars' RDAP services (a thin registry linking to its registrar, as for .com).
"""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config.schema import PolicySection
from relay.policy import rdap
from relay.policy.domains import check_whois
from relay.psl import registered_domain
from tests.support.rdap_server import RdapServer, sample

KINDS = {
    "proxy-domainsbyproxy": ("proxy", "domains by proxy"),
    "proxy-withheldforprivacy": ("proxy", "withheld for privacy"),
    "proxy-status": ("proxy", "status 'proxy'"),
    "redacted-rfc9537": ("redacted", "Registrant Name"),
    "redacted-tempspec": ("redacted", "redacted for privacy"),
    "redacted-status": ("redacted", "private"),
    "identifiable-org": ("identifiable", "registrant Acme Widgets GmbH"),
    "identifiable-org-name-redacted": ("identifiable", "registrant Widgets Ltd; withheld: "),
    "unknown-no-registrant": ("unknown", "names no registrant"),
}


@pytest.mark.parametrize("name", KINDS)
def test_classify_tells_proxies_from_redaction(name: str) -> None:
    """A privacy service on record fails; registry or registrar redaction (GDPR) is a
    different thing and is recorded as such; a published registrant passes."""
    kind, evidence = KINDS[name]
    registrant = rdap.classify(sample(name), rdap.load_markers())
    assert registrant.kind == kind, registrant
    assert evidence in registrant.reason, registrant.reason


def test_deployment_markers_extend_the_shipped_list(tmp_path: Path) -> None:
    extra = tmp_path / "privacy.toml"
    extra.write_text('[proxy]\nnames = ["acme widgets"]\n')
    registrant = rdap.classify(sample("identifiable-org"), rdap.load_markers(str(extra)))
    assert registrant.kind == "proxy" and "acme widgets" in registrant.reason


@pytest.mark.parametrize(
    ("domain", "service"),
    [
        ("shop.com", "https://rdap.verisign.com/com/v1/"),
        ("news.charity.org", "https://rdap.publicinterestregistry.org/rdap/"),
        ("example.nosuchtld", None),
    ],
)
def test_shipped_bootstrap_names_the_registry(domain: str, service: str | None) -> None:
    """RFC 9224: the registry's service is found by the domain's TLD in IANA's file."""
    urls = rdap.load_bootstrap("").base_urls(domain)
    assert (urls[0] if urls else None) == service


def test_bootstrap_prefers_https_and_the_longest_suffix() -> None:
    boot = rdap.Bootstrap.parse(json.dumps({"services": [
        [["example"], ["http://plain.test/", "https://secure.test/"]],
        [["co.example"], ["https://co.test/"]],
    ]}))  # fmt: skip
    assert boot.base_urls("a.example") == ["https://secure.test/", "http://plain.test/"]
    assert boot.base_urls("b.co.example") == ["https://co.test/"]


@pytest.mark.parametrize(
    ("domain", "registered"),
    [("news.shop.example", "shop.example"), ("a.b.co.uk", "b.co.uk"), ("shop.com", "shop.com")],
)
def test_lookup_is_for_the_registered_domain(domain: str, registered: str) -> None:
    assert registered_domain(domain) == registered


DOMAINS = {
    "proxied.example": "proxy-domainsbyproxy",
    "private.example": "redacted-rfc9537",
    "acme.example": "identifiable-org",
}


@pytest.fixture
def server() -> Iterator[RdapServer]:
    with RdapServer(DOMAINS) as running:
        yield running


def _policy(server: RdapServer, tmp_path: Path, base_url: str = "") -> PolicySection:
    bootstrap = tmp_path / "dns.json"
    bootstrap.write_text(json.dumps(server.bootstrap()))
    return PolicySection(rdap_bootstrap_file=str(bootstrap), rdap_base_url=base_url)


@pytest.mark.parametrize(
    ("domain", "status", "kind"),
    [
        ("news.proxied.example", "fail", "proxy"),
        ("private.example", "warn", "redacted"),
        ("acme.example", "pass", "identifiable"),
    ],
)
def test_lookup_follows_the_registry_to_the_registrar(
    server: RdapServer, tmp_path: Path, domain: str, status: str, kind: str
) -> None:
    """Over real HTTP: the bootstrap names the registry, whose thin answer links the
    registrar's, which shows the registrant; the finding stores what was seen."""
    config = _policy(server, tmp_path)
    finding = asyncio.run(check_whois(domain, config))
    assert (finding.check, finding.status) == ("whois", status), finding
    assert finding.seen is not None and finding.seen["kind"] == kind
    registered = domain.removeprefix("news.")
    assert server.requests == [f"/registry/domain/{registered}", f"/registrar/domain/{registered}"]
    if status == "fail":
        assert "without the privacy service" in finding.detail


def test_base_url_overrides_the_bootstrap(server: RdapServer, tmp_path: Path) -> None:
    config = _policy(server, tmp_path, base_url=f"{server.base_url}registrar/")
    finding = asyncio.run(check_whois("acme.example", config))
    assert finding.status == "pass" and server.requests == ["/registrar/domain/acme.example"]


def test_unreachable_or_unknown_is_not_conclusive(server: RdapServer, tmp_path: Path) -> None:
    config = _policy(server, tmp_path)
    unknown = asyncio.run(check_whois("nosuch.example", config))
    assert unknown.status == "fail" and unknown.transient and "404" in unknown.detail
    server.down = True
    down = asyncio.run(check_whois("acme.example", config))
    assert down.status == "fail" and down.transient and "HTTP 503" in down.detail


def test_tld_without_rdap_is_a_warning(server: RdapServer, tmp_path: Path) -> None:
    finding = asyncio.run(check_whois("shop.nosuchtld", _policy(server, tmp_path)))
    assert finding.status == "warn" and "cannot be checked" in finding.detail
