"""P-DNSAUTH and P-WHOIS: a sending domain publishes what receivers need to trust the
relay's mail, and its registrant is identifiable.

Checked when a domain is verified (`relay domain verify`), never per message:
- SPF (RFC 7208) authorises the relay: the configured mechanism (`[policy] spf_mechanism`,
  e.g. `include:_spf.relay.example`) appears in the record or in one it includes or
  redirects to, within the 10-lookup limit, and the record does not end in `+all`;
- DKIM (RFC 6376): the record of every active or next key of the domain is published;
- DMARC (RFC 7489): a record exists; `p=none` passes with a warning, quarantine or reject
  is what we recommend.
- P-WHOIS: the registrant, seen over RDAP, is not a privacy or proxy service (`rdap.py`);
- the tenant's return-path domain under it, if any (VERP bounces): its MX is the relay
  (`[relay] hostname`) and its SPF authorises the relay, since it is the envelope sender
  receivers check SPF against.
checkdmarc parses and evaluates SPF and DMARC (dnspython underneath); each finding says what
to publish when it fails. The result is stored, and the SMTP path only reads that result.
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dns.exception
import dns.resolver
from checkdmarc import dmarc, spf

from relay.config.schema import Config, PolicySection, split_host_port
from relay.config.tenants import is_within
from relay.dkim.keys import DomainKeys, dns_record
from relay.dkim.publish import is_published
from relay.policy import rdap

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str  # spf | dkim | dmarc | whois
    status: Status
    detail: str
    publish: str = ""  # the record to publish when it fails
    seen: dict[str, Any] | None = None  # what a look-up saw, stored for the admin
    transient: bool = False  # no conclusive answer (a service unreachable): keep the last

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"check": self.check, "status": self.status,
                                 "detail": self.detail, "publish": self.publish}  # fmt: skip
        if self.seen is not None:
            found["seen"] = self.seen
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        return cls(data["check"], data["status"], data["detail"], data.get("publish", ""),
                   data.get("seen"))  # fmt: skip


def passed(findings: list[Finding]) -> bool:
    return all(f.status != "fail" for f in findings)


def _resolver(nameservers: list[str]) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        pairs = [split_host_port(ns) for ns in nameservers]
        resolver.nameservers = [host for host, _ in pairs]
        resolver.port = pairs[0][1]
    return resolver


def _mechanisms(parsed: dict[str, Any]) -> list[str]:
    """Every `mechanism:value` in an evaluated SPF tree, includes and redirects followed."""
    found = []
    for m in parsed.get("mechanisms", []):
        found.append(f"{m['mechanism']}:{m['value']}")
        if isinstance(m.get("parsed"), dict):
            found += _mechanisms(m["parsed"])
    redirect = parsed.get("redirect")
    if isinstance(redirect, dict):
        found.append(f"redirect:{redirect.get('domain')}")
        if isinstance(redirect.get("parsed"), dict):
            found += _mechanisms(redirect["parsed"])
    return found


def check_spf(domain: str, mechanism: str, resolver: dns.resolver.Resolver) -> Finding:
    publish = f'{domain}. IN TXT "v=spf1 {mechanism} -all"'
    try:
        result = spf.check_spf(domain, resolver=resolver)
    except Exception as exc:  # checkdmarc raises its own errors for every kind of flaw
        return Finding("spf", "fail", f"SPF: {exc}", publish)
    if not result.get("valid"):
        return Finding("spf", "fail", f"SPF: {result.get('error', 'invalid record')}", publish)
    parsed = result["parsed"]
    if parsed.get("all") == "pass":
        return Finding("spf", "fail", "SPF ends in +all: it authorises the whole internet",
                       publish)  # fmt: skip
    if mechanism.lower() not in (m.lower() for m in _mechanisms(parsed)):
        return Finding("spf", "fail", f"SPF does not authorise the relay ({mechanism})",
                       f"add {mechanism} to: {result['record']}")  # fmt: skip
    return Finding("spf", "pass", f"SPF authorises the relay: {result['record']}")


def check_dmarc(domain: str, resolver: dns.resolver.Resolver) -> Finding:
    publish = f'_dmarc.{domain}. IN TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}"'
    try:
        result = dmarc.check_dmarc(domain, resolver=resolver)
    except Exception as exc:
        return Finding("dmarc", "fail", f"DMARC: {exc}", publish)
    if not result.get("valid") or not result.get("record"):
        return Finding("dmarc", "fail", f"no DMARC record ({result.get('error', '')})", publish)
    policy = result["tags"]["p"]["value"]
    if policy == "none":
        return Finding("dmarc", "warn", "DMARC p=none: receivers are not asked to act on "
                       "failures; p=quarantine or stricter is recommended", publish)  # fmt: skip
    return Finding("dmarc", "pass", f"DMARC p={policy}: {result['record']}")


async def check_dkim(domain: str, config: Config) -> list[Finding]:
    keys = DomainKeys(Path(config.relay.data_dir) / "dkim", domain)
    selectors = [s for st in keys.state.values() for s in (st.active, st.next) if s]
    if not selectors:
        return [Finding("dkim", "fail", "no DKIM key: run `relay dkim keygen " + domain + "`")]
    findings = []
    for selector in selectors:
        key = keys.load_key(selector)
        if await is_published(domain, selector, key, config.delivery.nameservers):
            findings.append(Finding("dkim", "pass", f"DKIM key {selector} is published"))
        else:
            findings.append(Finding("dkim", "fail", f"DKIM key {selector} is not published",
                                    f'{selector}._domainkey.{domain}. IN TXT "'
                                    f'{dns_record(key)}"'))  # fmt: skip
    return findings


_WHOIS_STATUS: dict[rdap.Kind, Status] = {
    "identifiable": "pass",
    "redacted": "warn",
    "unknown": "warn",
    "proxy": "fail",
}


async def check_whois(domain: str, policy: PolicySection) -> Finding:
    """P-WHOIS: the registrant of `domain`'s registration, over RDAP."""
    try:
        answer, url = await rdap.lookup(domain, policy)
    except LookupError as exc:  # no RDAP service for the TLD: nothing can be checked
        return Finding("whois", "warn", f"RDAP: {exc}; the registrant cannot be checked")
    except rdap.RdapError as exc:
        return Finding("whois", "fail", f"RDAP look-up failed: {exc}", transient=True)
    registrant = rdap.classify(answer, rdap.load_markers(policy.rdap_privacy_file), url)
    status: Status = _WHOIS_STATUS[registrant.kind]
    detail = f"RDAP: {registrant.reason}"
    if registrant.kind == "proxy":
        detail += "; register the domain in the sender's own name, without the privacy service"
    return Finding("whois", status, detail, seen=registrant.seen())


def check_return_path_mx(domain: str, relay_host: str, resolver: dns.resolver.Resolver) -> Finding:
    """The return-path domain's MX is the relay, so bounces reach its feedback listener."""
    publish = f"{domain}. IN MX 10 {relay_host}."
    try:
        answer = resolver.resolve(domain, "MX")
        hosts = {str(r.exchange).rstrip(".").lower() for r in answer}  # type: ignore[attr-defined]
    except (dns.exception.DNSException, OSError) as exc:
        return Finding("return-path", "fail", f"no MX for {domain}: {exc}", publish)
    if relay_host.lower() not in hosts:
        return Finding("return-path", "fail", f"MX of {domain} is {', '.join(sorted(hosts))}, "
                       f"not the relay ({relay_host})", publish)  # fmt: skip
    return Finding("return-path", "pass", f"MX of {domain} is the relay")


async def verify_domain(domain: str, config: Config) -> list[Finding]:
    """Every P-DNSAUTH and P-WHOIS finding for `domain` (an A-label), and those of the
    return-path domain under it."""
    resolver = _resolver(config.delivery.nameservers)
    spf_finding, dmarc_finding, whois_finding = await asyncio.gather(
        asyncio.to_thread(check_spf, domain, config.policy.spf_mechanism, resolver),
        asyncio.to_thread(check_dmarc, domain, resolver),
        check_whois(domain, config.policy),
    )
    findings = [spf_finding, *await check_dkim(domain, config), dmarc_finding, whois_finding]
    for tenant in config.tenants:
        return_path = tenant.return_path_domain
        if return_path and return_path != domain and is_within(return_path, domain):
            mx, spf_rp = await asyncio.gather(
                asyncio.to_thread(check_return_path_mx, return_path, config.relay.hostname,
                                  resolver),
                asyncio.to_thread(check_spf, return_path, config.policy.spf_mechanism, resolver),
            )  # fmt: skip
            spf_detail = f"{return_path}: {spf_rp.detail}"
            findings += [mx, Finding("return-path", spf_rp.status, spf_detail, spf_rp.publish)]
    return findings
