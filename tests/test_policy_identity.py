"""P-IDENTITY part by part: footers as senders write them pass, footers missing a part are
refused naming it."""

import asyncio

import pytest

from relay.config.schema import Identity, TenantSection
from relay.policy.checks.identity import SenderIdentity, country_names
from relay.policy.context import PolicyContext
from relay.policy.verdict import Outcome
from tests.support.messages import newsletter

TENANT = TenantSection(
    name="kaffee",
    domains=["kaffee-mueller.example"],
    networks=["10.0.0.0/8"],
    stream="bulk",
    verified=True,
    identity=Identity(
        name="Kaffeerösterei Müller GmbH",
        brands=["Müllers Kaffee"],
        street="Hauptstraße 5",
        postal_code="10115",
        city="Berlin",
        country="DE",
        contact_email="service@kaffee-mueller.example",
    ),
)

SHOWN = {
    "one line with middots": "Kaffeerösterei Müller GmbH · Hauptstraße 5 · 10115 Berlin · "
    "service@kaffee-mueller.example",
    "table cells, no legal form": "<table><tr><td>Kaffeerösterei Müller</td><td>Hauptstr. 5"
    "</td><td>10115 Berlin</td></tr></table><a href='mailto:hallo@kaffee-mueller.example'>"
    "Schreiben Sie uns</a>",
    "brand, umlauts written out, country in French": "Muellers Kaffee | Hauptstrasse 5 | "
    "D-10115 Berlin | Allemagne | Fragen? service@kaffee-mueller.example",
    "lines and entities": "Kaffeer&ouml;sterei M&uuml;ller GmbH<br>Hauptstra&szlig;e&nbsp;5<br>"
    "10115&nbsp;Berlin, Niemcy<br>service@kaffee-mueller.example",
}

MISSING = {
    "no street": ("Kaffeerösterei Müller GmbH, 10115 Berlin, service@kaffee-mueller.example",
                  "street"),
    "no postal code nor city": ("Kaffeerösterei Müller GmbH, Hauptstraße 5, "
                                "service@kaffee-mueller.example", "postal code or city"),
    "another company": ("Kaffeehaus Schulz KG, Hauptstraße 5, 10115 Berlin, "
                        "service@kaffee-mueller.example", "name"),
    "only a no-reply address": ("Kaffeerösterei Müller GmbH, Hauptstraße 5, 10115 Berlin, "
                                "noreply@kaffee-mueller.example", "contact email"),
    "the number elsewhere": ("Kaffeerösterei Müller GmbH, Hauptstraße, 10115 Berlin. Unsere "
                             "5 Sorten: service@kaffee-mueller.example", "street"),
}  # fmt: skip


def _verdict(footer: str) -> tuple[Outcome, str]:
    raw = newsletter(html=f"<p>{footer}</p>", text="Neuigkeiten.\n")
    ctx = PolicyContext(TENANT, "news@kaffee-mueller.example", ["a@inbox.example"], raw)
    verdict = asyncio.run(SenderIdentity().check(ctx))
    return verdict.outcome, verdict.reason


@pytest.mark.parametrize("footer", SHOWN.values(), ids=SHOWN.keys())
def test_footers_as_senders_write_them_pass(footer: str) -> None:
    outcome, reason = _verdict(footer)
    assert outcome is Outcome.PASS, reason


@pytest.mark.parametrize("case", MISSING)
def test_a_missing_part_is_named(case: str) -> None:
    footer, part = MISSING[case]
    outcome, reason = _verdict(footer)
    assert outcome is Outcome.REJECT and f"missing the sender's {part} (" in reason, reason


def test_the_country_is_named_in_every_language_cldr_knows() -> None:
    names = country_names("DE")
    assert {"deutschland", "germany", "allemagne", "niemcy", "duitsland", "alemanha"} <= names
    assert _verdict(SHOWN["lines and entities"])[1].endswith("contact email, country")
