"""P-IDENTITY: bulk mail shows who sends it (CAN-SPAM's valid physical postal address, the
e-Commerce Directive's art. 5 name and address), part by part.

The tenant's identity is configured in parts (`[tenants.identity]`: name, brands, street,
postal code, city, country, contact email), and each part is looked for on its own in the
text a recipient sees, whatever separates the parts (commas, ` · `, ` | `, line breaks,
table cells) and in whatever order. Names compare by their `skeleton` (case, accents,
umlauts written out, punctuation: "Müller GmbH" is "MUELLER G.m.b.H."). What a footer must
show, as a careful deliverability engineer reads the policy:
- the name: the full name, with or without its legal form ("Acme Widgets" for "Acme Widgets
  GmbH"), or a configured brand;
- the street: its house number and, within three words of it, a word of the street's
  name (abbreviations such as "Hauptstr." for "Hauptstraße" count);
- the postal code or the city (a postal code names its town whatever language the town's
  name is written in; a country without postal codes needs the city);
- a contact address: the configured one or any other address at one of the tenant's
  domains, written out or as a `mailto:` link (no-reply addresses do not count).
The country is reported when seen (in any language's name for it, from CLDR through babel,
or its ISO code) but not required: domestic mail leaves it out.
"""

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from babel import Locale, localedata

from relay.config.schema import Identity, TenantSection
from relay.config.tenants import owns_domain
from relay.mail.address import AddressError, to_a_label
from relay.policy.context import PolicyContext
from relay.policy.reading import message_words, rendered
from relay.policy.verdict import Verdict
from relay.policy.words import MessageWords, skeleton

_WORDS = tomllib.loads(
    resources.files("relay.policy.data").joinpath("identity.toml").read_text(encoding="utf-8")
)
LEGAL_FORMS = frozenset(skeleton(word) for word in _WORDS["legal_forms"])
"""Words of legal forms a footer may leave out of the name."""
STREET_TYPES = frozenset(skeleton(word) for word in _WORDS["street_words"])
"""Street types, directions and box words: optional, never the word that names a street."""

NO_REPLY = re.compile(r"^(?:no-?reply|do-?not-?reply|donotreply|mailer-daemon|bounce)", re.I)
_LOCAL_PART = re.compile(r"[\w.+'-]{1,64}$")
_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)+")


def _written_addresses(text: str, most: int = 100) -> list[str]:
    """Addresses written in `text`, found from each `@` outwards (a regular expression run
    over the whole text tries every word as a local part, which is slow on a newsletter)."""
    found: list[str] = []
    at = text.find("@")
    while at >= 0 and len(found) < most:
        local = _LOCAL_PART.search(text, max(0, at - 64), at)
        domain = _DOMAIN.match(text, at + 1)
        if local and domain:
            found.append(f"{local.group(0)}@{domain.group(0)}".lower())
        at = text.find("@", at + 1)
    return found


@cache
def country_names(code: str) -> frozenset[str]:
    """Every name CLDR gives the country (`skeleton`ed), in every language babel knows,
    and its ISO code. Loaded once per country, at start, since reading the names from every
    language's locale data is slow."""
    names = {skeleton(code)}
    for identifier in localedata.locale_identifiers():
        if "_" in identifier:
            continue
        try:
            name = Locale.parse(identifier).territories.get(code)
        except (ValueError, LookupError):
            continue
        if name:
            names.add(skeleton(name))
    names.discard("")
    return frozenset(names)


def _core(name: str) -> str:
    """A name without the legal form words at its ends (`acme widgets` of Acme Widgets
    GmbH & Co. KG), unless nothing distinctive would be left."""
    tokens = skeleton(name).split()
    while tokens and tokens[-1] in LEGAL_FORMS:
        tokens.pop()
    while tokens and tokens[0] in LEGAL_FORMS:
        tokens.pop(0)
    return " ".join(tokens) if any(len(t) >= 3 for t in tokens) else skeleton(name)


def _same_word(config: str, seen: str) -> bool:
    """A word of the configured street against one in the text: equal, or one shortens
    the other (`hauptstr` for `hauptstrasse`, `av` for `avenida` is left to STREET_TYPES)."""
    if config == seen:
        return True
    shorter, longer = sorted((config, seen), key=len)
    return len(shorter) >= 4 and longer.startswith(shorter)


@dataclass(frozen=True)
class Footer:
    words: MessageWords
    raw: str
    addresses: tuple[str, ...]
    """Email addresses written in the text or in `mailto:` links, lower case."""

    @property
    def text(self) -> str:
        """` w1 w2 ... `: the skeleton of the visible text, a space around every word."""
        return self.words.skeleton

    def has(self, phrase: str) -> bool:
        return bool(phrase) and f" {phrase} " in self.text

    def has_word(self, word: str) -> bool:
        """`word`, a word it shortens to (4 letters or more), or a longer word starting
        with it, somewhere in the text."""
        if f" {word}" in self.text:
            return True
        return any(f" {word[:n]} " in self.text for n in range(4, len(word)))

    def street(self, street: str) -> bool:
        words = skeleton(street).split()
        numbers = [w for w in words if any(c.isdigit() for c in w)]
        names = [w for w in words if w not in STREET_TYPES and w not in numbers and len(w) > 2]
        if not names:
            return self.has(" ".join(words))
        if not numbers:
            return any(self.has_word(name) for name in names)
        needle, start = f" {numbers[0]} ", 0
        for _ in range(200):  # a number can recur in a long text; enough to find the address
            at = self.text.find(needle, start)
            if at < 0:
                return False
            before = self.text[max(0, at - 100) : at].split()[-3:]
            after = self.text[at + len(needle) : at + len(needle) + 100].split()[:3]
            near = before + after  # "Hauptstr. 5", "5 Example Street", "SCS Qd. 2"
            if any(_same_word(name, token) for name in names for token in near):
                return True
            start = at + 1
        return False

    def postal_code(self, code: str) -> bool:
        words = skeleton(code).split()
        return bool(words) and (self.has(" ".join(words)) or self.has("".join(words)))

    def country(self, code: str) -> bool:
        at = self.raw.find(code)
        while at >= 0:  # the ISO code as a word of its own, in capitals: "DE", "CH-8001"
            before, after = self.raw[at - 1 : at], self.raw[at + 2 : at + 3]
            if not before.isalpha() and not after.isalpha():
                return True
            at = self.raw.find(code, at + 1)
        vocabulary = self.words.vocabulary
        return any(
            name in vocabulary if " " not in name else self.has(name)
            for name in country_names(code)
        )


def _footer(ctx: PolicyContext) -> Footer:
    if ctx.readings.footer is not None:
        return ctx.readings.footer
    shown = rendered(ctx)
    addresses = _written_addresses(shown.text)
    addresses += [
        link[7:].split("?")[0].strip().lower()
        for link in shown.links
        if link.lower().startswith("mailto:")
    ]
    footer = Footer(message_words(ctx), shown.text, tuple(addresses))
    ctx.readings.footer = footer
    return footer


def _contact(identity: Identity, tenant: TenantSection, addresses: tuple[str, ...]) -> bool:
    for address in addresses:
        if address == identity.contact_email.lower():
            return True
        local, _, domain = address.rpartition("@")
        if not local or NO_REPLY.match(local):
            continue
        try:
            if owns_domain(tenant, to_a_label(domain)):
                return True
        except AddressError:
            continue
    return False


class SenderIdentity:
    rule = "P-IDENTITY"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        identity = ctx.tenant.identity
        if identity is None:
            return Verdict.reject(
                self.rule, f"tenant {ctx.tenant.name} has no identity configured for bulk mail"
            )
        footer = _footer(ctx)
        names = [_core(identity.name), *(skeleton(b) for b in identity.brands)]
        parts = {
            "name": any(footer.has(n) for n in names),
            "street": footer.street(identity.street),
            "postal code or city": footer.postal_code(identity.postal_code)
            or footer.has(skeleton(identity.city)),
            "contact email": _contact(identity, ctx.tenant, footer.addresses),
        }
        found = [part for part, seen in parts.items() if seen]
        if footer.country(identity.country):
            found.append("country")
        missing = [part for part, seen in parts.items() if not seen]
        if missing:
            return Verdict.reject(
                self.rule,
                f"bulk mail must show who sends it: missing the sender's {', '.join(missing)}"
                f" (found: {', '.join(found) or 'nothing'})",
            )
        return Verdict.ok(self.rule, f"the sender is shown: {', '.join(found)}")
