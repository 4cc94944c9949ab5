"""P-UNSUB, P-IDENTITY, P-CONSENT-NOTE, P-NO-SERVICE-CONTACT on bulk mail, table-driven."""

import asyncio

import pytest

from relay.policy.context import PolicyContext
from relay.policy.pipeline import Pipeline
from relay.policy.verdict import Outcome
from tests.support.messages import BULK_TENANT, FOOTER_HTML, FOOTER_TEXT, newsletter


def _verdicts(raw: bytes, **ctx_args: object) -> dict[str, tuple[Outcome, str]]:
    ctx = PolicyContext(BULK_TENANT, "news@acme.example", ["alice@inbox.example"], raw, **ctx_args)  # type: ignore[arg-type]
    verdicts = asyncio.run(Pipeline().run("data", ctx, stop_at_refusal=False))
    return {v.rule: (v.outcome, v.reason) for v in verdicts}


BULK_RULES = ("P-UNSUB", "P-IDENTITY", "P-CONSENT-NOTE", "P-NO-SERVICE-CONTACT")


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_a_proper_newsletter_passes(cte: str) -> None:
    verdicts = _verdicts(newsletter(cte=cte), service_contacts=("abuse@relay.example",))
    for rule in BULK_RULES:
        assert verdicts[rule][0] is Outcome.PASS, (rule, verdicts[rule])


REFUSED = {
    "no List-Unsubscribe": (dict(unsubscribe=None), "P-UNSUB", "https URI"),
    "mailto only": (dict(unsubscribe="<mailto:u@acme.example>"), "P-UNSUB", "https URI"),
    "no one-click POST": (dict(post=None), "P-UNSUB", "One-Click"),
    "no visible link": (
        dict(html=FOOTER_HTML.replace("Unsubscribe", "More").replace("/u/abc", "/more"),
             text=FOOTER_TEXT.replace("Unsubscribe", "More").replace("/u/abc", "/more")),
        "P-UNSUB", "visible unsubscribe link",
    ),
    "no postal address": (
        dict(html=FOOTER_HTML.replace("Hauptstra&szlig;e 5,<br>10115 Berlin, Germany", ""),
             text=FOOTER_TEXT.replace("Hauptstraße 5, 10115 Berlin, Germany", "")),
        "P-IDENTITY", "missing the sender's street, postal code or city",
    ),
    "address only in a comment": (
        dict(html=FOOTER_HTML.replace("Acme Widgets GmbH", "<!-- Acme Widgets GmbH -->"),
             text=FOOTER_TEXT.replace("Acme Widgets GmbH", "")),
        "P-IDENTITY", "name",
    ),
    "no consent statement": (
        dict(html=FOOTER_HTML.replace("You receive this because you subscribed", "Hi"),
             text=FOOTER_TEXT.replace("You receive this because you subscribed", "Hi")),
        "P-CONSENT-NOTE", "why the recipient gets it",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_refused(case: str) -> None:
    changes, rule, reason = REFUSED[case]
    outcome, text = _verdicts(newsletter(**changes))[rule]  # type: ignore[arg-type]
    assert outcome is Outcome.REJECT and reason in text, text


def test_service_contact_is_refused() -> None:
    """P-NO-SERVICE-CONTACT: the relay operator's abuse address is not the tenant's."""
    raw = newsletter(html=FOOTER_HTML + "<p>Questions? abuse@relay.example</p>")
    outcome, reason = _verdicts(raw, service_contacts=("abuse@relay.example",))[
        "P-NO-SERVICE-CONTACT"
    ]
    assert outcome is Outcome.REJECT and "abuse@relay.example" in reason


def test_consent_in_another_language_and_own_statement() -> None:
    german = FOOTER_TEXT.replace(
        "You receive this because you subscribed at acme.example/news.",
        "Sie erhalten diese E-Mail, weil Sie sich angemeldet haben.",
    )
    raw = newsletter(html=FOOTER_HTML.replace("You receive this because you subscribed", "Hi"),
                     text=german)  # fmt: skip
    assert _verdicts(raw)["P-CONSENT-NOTE"][0] is Outcome.PASS


def test_transactional_mail_is_exempt() -> None:
    transactional = BULK_TENANT.model_copy(update={"stream": "transactional"})
    raw = newsletter(unsubscribe=None, post=None, html="<p>Receipt</p>", text="Receipt\n")
    ctx = PolicyContext(transactional, "a@acme.example", ["b@x.example"], raw)
    verdicts = asyncio.run(Pipeline().run("data", ctx, stop_at_refusal=False))
    assert {v.rule: v.outcome for v in verdicts if v.rule in BULK_RULES} == dict.fromkeys(
        BULK_RULES, Outcome.SKIP
    )


def test_bulk_tenant_without_identity_is_refused() -> None:
    no_identity = BULK_TENANT.model_copy(update={"identity": None})
    ctx = PolicyContext(no_identity, "a@acme.example", ["b@x.example"], newsletter())
    verdicts = asyncio.run(Pipeline().run("data", ctx, stop_at_refusal=False))
    identity = next(v for v in verdicts if v.rule == "P-IDENTITY")
    assert identity.outcome is Outcome.REJECT and "no identity configured" in identity.reason
