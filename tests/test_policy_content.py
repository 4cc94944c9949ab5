"""P-CONTENT: prohibited categories refused with their evidence; legitimate mail passes."""

import asyncio
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from relay.config.schema import TenantSection
from relay.policy.checks.content import Phrases, ProhibitedContent, Rule, load_categories
from relay.policy.context import PolicyContext
from relay.policy.verdict import Outcome, Verdict
from tests.content_corpus import LEGITIMATE, PROHIBITED

TENANT = TenantSection(name="acme", domains=["acme.example"], networks=["10.0.0.0/8"])
ENCODINGS = ("7bit", "quoted-printable", "base64")


def _message(subject: str, body: str, n: int) -> bytes:
    """Vary the shape: plain or HTML-only, and the transfer encoding, by position."""
    msg = EmailMessage()
    msg["From"] = "news@acme.example"
    msg["To"] = "alice@inbox.example"
    msg["Subject"] = subject
    cte = ENCODINGS[n % 3]
    if n % 2:
        msg.set_content(f"<html><body><p>{body}</p></body></html>", subtype="html", cte=cte)
    else:
        msg.set_content(body + "\n", cte=cte)
    return msg.as_bytes(policy=SMTP)


def _check(raw: bytes, checker: ProhibitedContent | None = None) -> Verdict:
    ctx = PolicyContext(TENANT, "news@acme.example", ["alice@inbox.example"], raw)
    return asyncio.run((checker or ProhibitedContent()).check(ctx))


@pytest.mark.parametrize(("name", "category", "subject", "body"), PROHIBITED,
                         ids=[p[0] for p in PROHIBITED])  # fmt: skip
def test_prohibited_is_refused(name: str, category: str, subject: str, body: str) -> None:
    verdict = _check(_message(subject, body, PROHIBITED.index((name, category, subject, body))))
    assert verdict.outcome is Outcome.REJECT, verdict
    label = next(c.label for c in ProhibitedContent().categories if c.name == category)
    assert f"prohibited content ({label}): " in verdict.reason


@pytest.mark.parametrize(("name", "subject", "body"), LEGITIMATE, ids=[x[0] for x in LEGITIMATE])
def test_legitimate_passes(name: str, subject: str, body: str) -> None:
    verdict = _check(_message(subject, body, LEGITIMATE.index((name, subject, body))))
    assert verdict.outcome is Outcome.PASS, verdict


def test_precision_and_recall_over_the_corpus() -> None:
    """Printed for the record (pytest -s); asserted so the rules cannot silently rot."""
    caught = sum(
        _check(_message(s, b, i)).outcome is Outcome.REJECT
        for i, (_, _, s, b) in enumerate(PROHIBITED)
    )
    false = sum(
        _check(_message(s, b, i)).outcome is Outcome.REJECT
        for i, (_, s, b) in enumerate(LEGITIMATE)
    )
    precision = caught / (caught + false) if caught + false else 0.0
    recall = caught / len(PROHIBITED)
    print(
        f"P-CONTENT corpus: {len(PROHIBITED)} prohibited, {len(LEGITIMATE)} legitimate; "
        f"precision {precision:.2f}, recall {recall:.2f}"
    )
    assert len(PROHIBITED) >= 20 and len(LEGITIMATE) >= 40
    assert precision >= 0.95 and recall >= 0.9


def test_every_category_has_a_prohibited_example() -> None:
    names = {c.name for c in ProhibitedContent().categories}
    assert names == {category for _, category, _, _ in PROHIBITED}


def test_deployment_rules_add_a_category(tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text(
        '[categories.weapons]\nlabel = "weapons"\nthreshold = 2.0\n'
        'rules = [{ phrase = "ghost gun", weight = 2.0 }]\n'
    )
    raw = _message("Build kits", "Order a ghost gun kit today.", 0)
    assert _check(raw).outcome is Outcome.PASS
    verdict = _check(raw, ProhibitedContent(extra))
    assert verdict.outcome is Outcome.REJECT and '(weapons): "ghost gun"' in verdict.reason


def test_shipped_patterns_have_anchors_that_do_not_change_a_verdict() -> None:
    """Every shipped regular expression names anchors (so clean mail is not scanned with
    `re`), and over the whole corpus the anchors never change what the rule finds."""
    for category in load_categories():
        for rule in category.rules:
            if rule.pattern is None:
                continue
            assert rule.anchors, f"{category.name}: {rule.label} has no anchors"
            bare = Rule(rule.label, rule.weight, pattern=rule.pattern)
            for _, _, subject, body in [*PROHIBITED, *((n, "", s, b) for n, s, b in LEGITIMATE)]:
                text = " ".join(f"{subject} {body}".split()).casefold()
                found = Phrases(set(), set(rule.anchors)).scan(text)
                assert rule.search(text, found) == bare.search(text, found), (rule.label, subject)


def _whole_word_find(phrase: str, text: str) -> bool:
    """The plain reading of a phrase rule: an occurrence with no letter or digit around it."""
    start = text.find(phrase)
    while start >= 0:
        end = start + len(phrase)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        start = text.find(phrase, start + 1)
    return False


def test_one_pass_phrase_search_finds_what_a_search_per_phrase_finds() -> None:
    """Over the corpus, and texts where phrases touch letters, overlap or end the text."""
    phrases = {r.phrase for c in load_categories() for r in c.rules if r.pattern is None}
    phrases |= {"gun", "ghost gun", "gun kit"}
    search = Phrases(phrases, {"gun", "host"})
    texts = [
        " ".join(f"{subject} {body}".split()).casefold()
        for _, _, subject, body in [*PROHIBITED, *((n, "", s, b) for n, s, b in LEGITIMATE)]
    ]
    texts += ["ghost gun kit", "ghost gunkit", "xghost gun", "gun", "guns gun.", "", "gungun gun"]
    for text in texts:
        expected = {p for p in phrases if _whole_word_find(p, text)}
        found = search.scan(text)
        assert found.phrases == expected, text
        assert found.anchors == {a for a in ("gun", "host") if a in text}, text
