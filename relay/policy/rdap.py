"""P-WHOIS: the registrant of a sending domain is identifiable, not hidden behind a proxy.

Looked up over RDAP (RFC 9082 queries, RFC 9083 answers) when a domain is added or
re-verified, never per message:
- the RDAP service comes from IANA's bootstrap registry for domains (RFC 9224): a copy ships
  with the relay (`data/rdap_dns.json`, IANA's entries as republished in the npm package
  whoisserver-world 1.0.31, checked up to its `publication` date, 2025-04-25);
  `[policy] rdap_bootstrap_file` names a newer one (a download of
  https://data.iana.org/rdap/dns.json), and `[policy] rdap_base_url` sends every query to
  one service instead;
- a thin registry (.com, .net) answers without the registrant and links the registrar's
  RDAP service (`rel="related"`); that answer is fetched and laid over the first;
- whoisit parses the JSON (entities by role, jCard, RFC 9537 redactions).

What was seen is classified (`Registrant.kind`):
- `proxy`: the registrant on record is a privacy or proxy service (a name or email domain
  in `data/privacy_services.toml`, or the entity status `proxy`): P-WHOIS fails;
- `redacted`: the registry or registrar withheld the registrant's data (GDPR, ICANN's
  Registration Data Policy; RFC 9537 `redacted` members, markers such as
  "REDACTED FOR PRIVACY", entity status `private`/`removed`/`obscured`). The registrant is
  still the registrar's customer of record and is disclosed on a lawful request, so this
  passes with a warning, and the record says which one was seen;
- `identifiable`: a registrant name or organisation is published: passes;
- `unknown`: the answer names no registrant and shows no redaction: passes with a warning,
  as does a TLD that runs no RDAP service (many ccTLDs), since the relay cannot tell.
"""

import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import aiohttp
from whoisit.bootstrap import BaseBootstrap
from whoisit.parser import parse as parse_rdap
from whoisit.utils import recursive_merge

from relay.config.schema import PolicySection
from relay.psl import registered_domain

Kind = Literal["identifiable", "redacted", "proxy", "unknown"]
_RDAP_TYPE = "application/rdap+json"


class RdapError(Exception):
    """The lookup could not be completed (network, HTTP status, not JSON); transient or
    not, the caller keeps the last conclusive result rather than trusting this one."""


@dataclass(frozen=True)
class Registrant:
    """What the RDAP answer shows of the registrant, and what it means for P-WHOIS."""

    kind: Kind
    reason: str
    name: str = ""
    organisation: str = ""
    email: str = ""
    redacted: tuple[str, ...] = ()
    server: str = ""

    def seen(self) -> dict[str, Any]:
        """The facts stored with the finding, so an admin can see what was judged."""
        return {
            "kind": self.kind,
            "name": self.name,
            "organisation": self.organisation,
            "email": self.email,
            "redacted": list(self.redacted),
            "server": self.server,
        }


@dataclass(frozen=True)
class Markers:
    proxy_names: tuple[str, ...]
    proxy_email_domains: tuple[str, ...]
    proxy_statuses: frozenset[str]
    redaction_markers: tuple[str, ...]
    redaction_statuses: frozenset[str]


@dataclass
class Bootstrap:
    """IANA's registry of RDAP services by TLD (RFC 9224 section 4)."""

    services: dict[str, list[str]] = field(default_factory=dict)
    publication: str = ""

    @classmethod
    def parse(cls, text: str) -> "Bootstrap":
        data = json.loads(text)
        services: dict[str, list[str]] = {}
        for entry in data.get("services", []):
            labels, urls = entry[0], entry[1]
            # RFC 9224 section 3: prefer https; keep http only where nothing else is named
            ordered = sorted(urls, key=lambda u: not u.startswith("https://"))
            for label in labels:
                services[label.lower()] = ordered
        return cls(services, data.get("publication", ""))

    def base_urls(self, domain: str) -> list[str]:
        """The services for the longest suffix of `domain` that the registry lists."""
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels)):
            urls = self.services.get(".".join(labels[i:]))
            if urls:
                return urls
        return []


@cache
def _shipped_bootstrap() -> Bootstrap:
    text = resources.files("relay.policy.data").joinpath("rdap_dns.json").read_text()
    return Bootstrap.parse(text)


def load_bootstrap(path: str) -> Bootstrap:
    return Bootstrap.parse(Path(path).read_text()) if path else _shipped_bootstrap()


def load_markers(extra_path: str = "") -> Markers:
    text = resources.files("relay.policy.data").joinpath("privacy_services.toml").read_text()
    data = tomllib.loads(text)
    if extra_path:
        extra = tomllib.loads(Path(extra_path).read_text())
        for section, values in extra.items():
            for key, items in values.items():
                data.setdefault(section, {}).setdefault(key, []).extend(items)
    proxy, redaction = data.get("proxy", {}), data.get("redaction", {})
    return Markers(
        proxy_names=tuple(n.lower() for n in proxy.get("names", [])),
        proxy_email_domains=tuple(d.lower() for d in proxy.get("email_domains", [])),
        proxy_statuses=frozenset(s.lower() for s in proxy.get("statuses", [])),
        redaction_markers=tuple(m.lower() for m in redaction.get("markers", [])),
        redaction_statuses=frozenset(s.lower() for s in redaction.get("statuses", [])),
    )


async def _fetch(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with session.get(url, headers={"Accept": _RDAP_TYPE}) as response:
            if response.status == 404:
                raise RdapError(f"{url}: 404, the registry does not know the domain")
            if response.status != 200:
                raise RdapError(f"{url}: HTTP {response.status}")
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise RdapError(f"{url}: {exc!r}") from exc
    if not isinstance(data, dict):
        raise RdapError(f"{url}: the answer is not an RDAP object")
    return data


def _related_url(answer: dict[str, Any]) -> str:
    """The registrar's RDAP URL that a thin registry links (RFC 9083 4.2, RFC 9224 5)."""
    for link in answer.get("links", []):
        if not isinstance(link, dict):
            continue
        kind = str(link.get("type", ""))
        if link.get("rel") in ("related", "registration") and kind.startswith(_RDAP_TYPE):
            return str(link.get("href", ""))
    return ""


async def lookup(domain: str, policy: PolicySection) -> tuple[dict[str, Any], str]:
    """The RDAP answer for the registered domain of `domain` (registrar's answer laid over
    the registry's), and the URL asked. Raises RdapError when no answer can be had."""
    name = registered_domain(domain)
    if policy.rdap_base_url:
        bases = [policy.rdap_base_url]
    else:
        bases = load_bootstrap(policy.rdap_bootstrap_file).base_urls(name)
    if not bases:
        raise LookupError(f"no RDAP service for {name} in the IANA bootstrap registry")
    url = f"{bases[0].rstrip('/')}/domain/{name}"
    timeout = aiohttp.ClientTimeout(total=policy.rdap_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answer = await _fetch(session, url)
        related = _related_url(answer)
        if related:
            try:
                recursive_merge(answer, await _fetch(session, related))
            except RdapError:
                pass  # the registry's own answer is still judged; it may show enough
    return answer, url


def _is_email_at(email: str, domains: tuple[str, ...]) -> bool:
    host = email.rpartition("@")[2].lower()
    return any(host == d or host.endswith("." + d) for d in domains)


def _has_marker(values: list[str], markers: tuple[str, ...]) -> str:
    for value in values:
        low = value.lower()
        for marker in markers:
            if marker in low:
                return marker
    return ""


def _registrant_statuses(answer: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for entity in answer.get("entities", []):
        if isinstance(entity, dict) and "registrant" in entity.get("roles", []):
            found.update(str(s).lower() for s in entity.get("status", []))
    return found


_REGISTRANT_FIELD = re.compile(r"registrant", re.IGNORECASE)


def classify(answer: dict[str, Any], markers: Markers, server: str = "") -> Registrant:
    """Judge an RDAP domain answer (RFC 9083) for P-WHOIS; see the module docstring."""
    parsed = parse_rdap(BaseBootstrap(), "domain", "", answer)
    registrants = parsed.get("entities", {}).get("registrant", [])
    person = registrants[0] if registrants else {}
    name = str(person.get("name", ""))
    organisation = str(person.get("organisation", ""))
    email = str(person.get("email", ""))
    address = str(person.get("address", {}).get("label", "")) if person.get("address") else ""
    redacted = tuple(r for r in parsed.get("redacted", []) if _REGISTRANT_FIELD.search(r))
    statuses = _registrant_statuses(answer)
    facts = {
        "name": name,
        "organisation": organisation,
        "email": email,
        "redacted": redacted,
        "server": server,
    }

    proxy = _has_marker([name, organisation, address], markers.proxy_names)
    if proxy or (email and _is_email_at(email, markers.proxy_email_domains)):
        what = proxy or email.rpartition("@")[2]
        return Registrant(
            "proxy", f"the registrant on record is a privacy or proxy service ({what})", **facts
        )
    if statuses & markers.proxy_statuses:
        return Registrant(
            "proxy", "the registry marks the registrant as a proxy (RDAP status 'proxy')", **facts
        )
    visible = [
        v for v in (organisation, name) if v and not _has_marker([v], markers.redaction_markers)
    ]
    if visible:
        note = f"; withheld: {', '.join(redacted)}" if redacted else ""
        return Registrant("identifiable", f"registrant {visible[0]}{note}", **facts)
    withheld = _has_marker([name, organisation, email], markers.redaction_markers)
    if redacted or withheld or statuses & markers.redaction_statuses:
        evidence = (
            ", ".join(redacted)
            or withheld
            or ", ".join(sorted(statuses & markers.redaction_statuses))
        )
        return Registrant(
            "redacted",
            f"registrant data withheld by the registry or registrar "
            f"(GDPR redaction, not a proxy service): {evidence}",
            **facts,
        )
    return Registrant(
        "unknown", "the RDAP answer names no registrant and shows no redaction", **facts
    )
