"""P-DNSAUTH: domain verification against a real DNS server, and its enforcement."""

import asyncio
import json
from collections.abc import Iterator
from email.policy import SMTP
from pathlib import Path

import pytest
import tomli_w

from relay.config.load import load_config
from relay.dkim.keys import DomainKeys, dns_record
from relay.policy.domains import passed, verify_domain
from tests.support.dkim import txt_record
from tests.support.dns_server import DnsServer
from tests.support.peers import (
    Amend,
    RelayConfig,
    Sink,
    db_count,
    demo_document,
    merged,
    run_cli,
    running,
    wait_for,
)
from tests.support.rdap_server import RdapServer
from tests.support.smtp_client import message, submission

SPF_RELAY = ("TXT", 300, '"v=spf1 ip4:192.0.2.0/24 -all"')


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    server = DnsServer({"_spf.relay.test": [SPF_RELAY]})
    try:
        yield server
    finally:
        server.stop()


def _publish(dns: DnsServer, data_dir: Path, domain: str, dmarc: str | None, spf: str) -> None:
    keys = DomainKeys(data_dir / "dkim", domain)
    selector, key = keys.add_next("rsa")
    keys.promote("rsa")
    dns.add(f"{selector}._domainkey.{domain}", "TXT", 300, txt_record(dns_record(key)))
    dns.add(domain, "TXT", 300, f'"{spf}"')
    if dmarc:
        dns.add(f"_dmarc.{domain}", "TXT", 300, f'"{dmarc}"')


def _config(tmp_path: Path, dns: DnsServer, domains: list[str], **tenant: object) -> Path:
    """The demo relay.toml with its data in `tmp_path`, `dns` as its resolver, the test SPF
    mechanism, and `domains` (and `tenant`'s other keys) for its one tenant."""
    path = tmp_path / "relay.toml"
    document = merged(
        demo_document(),
        {
            "relay": {"data_dir": str(tmp_path / "data")},
            "delivery": {"nameservers": [f"127.0.0.1:{dns.port}"]},
            "policy": {"spf_mechanism": "include:_spf.relay.test"},
            "tenants": Amend(demo={"domains": domains, **tenant}),
        },
    )
    path.write_text(tomli_w.dumps(document))
    return path


CASES = {
    "good.example": ("v=DMARC1; p=reject", "v=spf1 include:_spf.relay.test -all", True, []),
    "lax.example": ("v=DMARC1; p=none", "v=spf1 include:_spf.relay.test ~all", True, ["warn"]),
    "nodmarc.example": (None, "v=spf1 include:_spf.relay.test -all", False, ["dmarc"]),
    "otherspf.example": ("v=DMARC1; p=reject", "v=spf1 include:_spf.esp.example -all", False,
                         ["spf"]),
    "open.example": ("v=DMARC1; p=reject", "v=spf1 include:_spf.relay.test +all", False, ["spf"]),
}  # fmt: skip


@pytest.mark.parametrize("domain", CASES)
def test_verification(domain: str, dns: DnsServer, tmp_path: Path) -> None:
    """SPF must authorise the relay (not +all), DKIM keys be published, DMARC exist
    (p=none passes with a warning); a failure says what to publish."""
    dmarc, spf, ok, problems = CASES[domain]
    dns.add("_spf.esp.example", "TXT", 300, '"v=spf1 ip4:198.51.100.0/24 -all"')
    _publish(dns, tmp_path / "data", domain, dmarc, spf)
    config = load_config(_config(tmp_path, dns, [domain]))
    findings = asyncio.run(verify_domain(domain, config))
    assert passed(findings) is ok, findings
    assert [f.check for f in findings] == ["spf", "dkim", "dmarc", "whois"]
    for f in findings:
        if f.check in problems:
            assert f.status == "fail" and f.publish, f
        if "warn" in problems and f.check == "dmarc":
            assert f.status == "warn" and "p=none" in f.detail


def test_unpublished_dkim_key_fails(dns: DnsServer, tmp_path: Path) -> None:
    _publish(dns, tmp_path / "data", "shop.example", "v=DMARC1; p=reject",
             "v=spf1 include:_spf.relay.test -all")  # fmt: skip
    DomainKeys(tmp_path / "data" / "dkim", "shop.example").add_next("ed25519")
    config = load_config(_config(tmp_path, dns, ["shop.example"]))
    dkim = [f for f in asyncio.run(verify_domain("shop.example", config)) if f.check == "dkim"]
    assert [f.status for f in dkim] == ["pass", "fail"]
    assert "k=ed25519" in dkim[1].publish


@pytest.mark.e2e
def test_only_verified_domains_send(
    relay_config: RelayConfig, sink: Sink, dns: DnsServer, tmp_path: Path
) -> None:
    """With require_verified_domains, a From domain that has not passed `relay domain
    verify` is refused with [P-DNSAUTH]; once verified (and reloaded) it sends."""
    relay_config.require_verified_domains = True
    relay_config.overrides = {"delivery": {"nameservers": [f"127.0.0.1:{dns.port}"]}}
    with running(relay_config, tmp_path) as relay:
        with submission(relay.config.submission_port) as client:
            code, reply = client.mail("app@acme.example")
            client.rcpt("alice@inbox.example")
            code, reply = client.data(message().as_bytes(policy=SMTP))
        assert code == 550 and reply.startswith(b"5.7.1 [P-DNSAUTH] sending domain acme.example")
        assert db_count(relay_config.dsn, "messages") == 0
        _publish(dns, relay_config.data_dir, "acme.example", "v=DMARC1; p=quarantine",
                 "v=spf1 include:_spf.relay.test -all")  # fmt: skip
        result = run_cli(relay, "domain", "verify", "acme.example")
        assert result.returncode == 0 and "acme.example: verified" in result.stdout, result
        assert "acme.example" in run_cli(relay, "domain", "ls").stdout
        relay.signal(1)  # reload: the relay reads verification results at once
        wait_for(lambda: "configuration reloaded" in relay.log(), 10, "reload")
        with submission(relay.config.submission_port) as client:
            client.send_message(message())
        sink.wait_count(1)


@pytest.mark.e2e
def test_a_proxied_registrant_does_not_send(
    relay_config: RelayConfig, sink: Sink, dns: DnsServer, tmp_path: Path
) -> None:
    """P-WHOIS: `relay domain add` finds the registrant behind a privacy service over RDAP,
    and the From is refused with [P-WHOIS] though the DNS records are right; once the
    registrant is published it sends, and an RDAP outage keeps that conclusion."""
    rdap_server = RdapServer({"acme.example": "proxy-domainsbyproxy"})
    bootstrap = tmp_path / "rdap-dns.json"
    bootstrap.write_text(json.dumps(rdap_server.bootstrap()))
    relay_config.require_verified_domains = True
    relay_config.overrides = {
        "delivery": {"nameservers": [f"127.0.0.1:{dns.port}"]},
        "policy": {"rdap_bootstrap_file": str(bootstrap)},
    }
    _publish(dns, relay_config.data_dir, "acme.example", "v=DMARC1; p=reject",
             "v=spf1 include:_spf.relay.test -all")  # fmt: skip
    with rdap_server, running(relay_config, tmp_path) as relay:
        added = run_cli(relay, "domain", "add", "acme.example", "--tenant", "acme")
        assert added.returncode == 1, added
        assert "FAIL  whois  RDAP: the registrant on record is a privacy or proxy service" in (
            added.stdout
        )
        assert "PASS  spf" in added.stdout and "NOT verified" in added.stdout
        relay.signal(1)
        wait_for(lambda: "configuration reloaded" in relay.log(), 10, "reload")
        with submission(relay.config.submission_port) as client:
            client.mail("app@acme.example")
            client.rcpt("alice@inbox.example")
            code, reply = client.data(message().as_bytes(policy=SMTP))
        assert code == 550 and reply.startswith(
            b"5.7.1 [P-WHOIS] the registrant of acme.example is hidden behind a privacy"
        )
        assert db_count(relay_config.dsn, "messages") == 0

        rdap_server.domains["acme.example"] = "identifiable-org"
        assert run_cli(relay, "domain", "verify", "acme.example").returncode == 0
        rdap_server.down = True
        kept = run_cli(relay, "domain", "verify", "acme.example")
        assert kept.returncode == 0 and "kept from the last check" in kept.stdout, kept
        relay.signal(1)
        wait_for(lambda: relay.log().count("configuration reloaded") >= 2, 10, "reload")
        with submission(relay.config.submission_port) as client:
            client.send_message(message())
        sink.wait_count(1)


def test_return_path_domain_needs_the_relay_as_mx_and_in_spf(
    dns: DnsServer, tmp_path: Path
) -> None:
    """A tenant's return-path domain (VERP) under a sending domain is verified with it: its
    MX must be the relay, so bounces come back, and its SPF must authorise the relay."""
    _publish(dns, tmp_path / "data", "shop.example", "v=DMARC1; p=reject",
             "v=spf1 include:_spf.relay.test -all")  # fmt: skip
    path = _config(tmp_path, dns, ["shop.example"], return_path_domain="bounce.shop.example")
    config = load_config(path)
    findings = asyncio.run(verify_domain("shop.example", config))
    return_path = [f for f in findings if f.check == "return-path"]
    assert [f.status for f in return_path] == ["fail", "fail"]
    assert return_path[0].publish == "bounce.shop.example. IN MX 10 relay.localhost."
    assert not passed(findings)

    dns.add("bounce.shop.example", "MX", 300, "10 relay.localhost.")
    dns.add("bounce.shop.example", "TXT", 300, '"v=spf1 include:_spf.relay.test -all"')
    findings = asyncio.run(verify_domain("shop.example", config))
    assert [f.status for f in findings if f.check == "return-path"] == ["pass", "pass"]
    assert passed(findings)
