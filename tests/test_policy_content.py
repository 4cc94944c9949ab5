"""P-CONTENT's machinery: words meet phrases whatever their inflection, accents, case,
compounds and language; scores follow content.toml; the verdict names category and
evidence. Whether the rules judge real mail right is `test_policy_corpus.py`'s question."""

import asyncio
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from relay.config.schema import TenantSection
from relay.policy.checks.content import ProhibitedContent, categories, score
from relay.policy.context import PolicyContext
from relay.policy.phrasebook import Phrase, Phrasebook, shipped
from relay.policy.verdict import Outcome
from relay.policy.words import fold, skeleton, stem_phrase

TENANT = TenantSection(name="acme", domains=["acme.example"], networks=["10.0.0.0/8"])
STOPWORDS = {
    "en": ["the", "and", "you"],
    "de": ["der", "und", "sie"],
    "fr": ["le", "la", "vous"],
    "pl": ["i", "nie", "sie"],
}


def _message(subject: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "news@acme.example"
    msg["To"] = "alice@inbox.example"
    msg["Subject"] = subject
    msg.set_content(f"<html><body>{html}</body></html>", subtype="html", cte="base64")
    return msg.as_bytes(policy=SMTP)


def _check(raw: bytes, enforced: frozenset[str] | None = None) -> tuple[Outcome, str, str]:
    ctx = PolicyContext(TENANT, "news@acme.example", ["alice@inbox.example"], raw)
    ctx.content_categories = enforced
    verdict = asyncio.run(ProhibitedContent().check(ctx))
    return verdict.outcome, verdict.detail, verdict.reason


@pytest.mark.parametrize(
    ("phrase", "language", "text"),
    [
        ("you subscribed", "en", "because YOU SUBSCRIBE to our list"),
        ("free spin", "en", "Claim 50 Free Spins today"),
        ("Glücksspiel", "de", "Die besten GLUECKSSPIELE der Stadt"),
        ("bez recepty", "pl", "Tabletki BEZ RECEPTY, dyskretna wysyłka"),
        ("désinscrire", "fr", "Pour vous desinscrire cliquez ici"),
    ],
)
def test_a_phrase_meets_its_inflections_case_and_accents(
    phrase: str, language: str, text: str
) -> None:
    book = Phrasebook([Phrase(phrase, language, "g")], {language: STOPWORDS.get(language, [])})
    words = book.words(f"{text} " + " ".join(STOPWORDS.get(language, []) * 3))
    assert [p.text for p in book.find(words).phrases] == [phrase]


def test_a_phrase_is_a_run_of_whole_words() -> None:
    book = Phrasebook([Phrase("free spins", "en", "g")], {"en": ["the"]})
    assert not book.find(book.words("carefree spinster, free of spinach")).phrases


def test_a_star_matches_inside_compounds() -> None:
    book = Phrasebook([Phrase("*casino*", "de", "g")], STOPWORDS)
    words = book.words("Der neue Onlinecasinobonus für Sie und der Rest")
    assert [p.text for p in book.find(words).phrases] == ["*casino*"]


def test_languages_are_read_from_stopwords_and_english_always() -> None:
    book = Phrasebook([], STOPWORDS)
    assert book.words("der Hund und die Katze, sie und der Rest").languages == ("en", "de")
    assert book.words("nothing here").languages == ("en",)


def test_names_compare_by_skeleton() -> None:
    assert skeleton("Müller GmbH") == skeleton("MUELLER gmbh") == skeleton("muller GMBH")
    assert fold("Łódź") == "lodz" and stem_phrase("Straßen", "de") == stem_phrase("Strasse", "de")


def _found(category: str, **tiers: int) -> set[Phrase]:
    found = set()
    for tier, count in tiers.items():
        group = tier if tier in ("promotion", "reporting") else f"content.{category}.{tier}"
        found |= {Phrase(f"{tier} {i}", "en", group) for i in range(count)}
    return found


@pytest.mark.parametrize(
    ("tiers", "points"),
    [
        ({"strong": 1}, 3),  # one strong phrase alone is not enough
        ({"strong": 1, "promotion": 5}, 5),  # with selling language it is; promotion capped
        ({"weak": 8, "promotion": 3}, 8),  # topic words capped at 6
        ({"weak": 1, "promotion": 3}, 1),  # selling language counts only beside the topic
        ({"strong": 2, "against": 1}, 3),
        ({"strong": 2, "reporting": 5}, 1.5),  # news and warnings: 1.5 each, at most 3 of them
        ({"medium": 2, "weak": 1}, 5),
    ],
)
def test_score_follows_content_toml(tiers: dict[str, int], points: float) -> None:
    gambling = next(c for c in categories() if c.name == "gambling")
    assert score(gambling, _found("gambling", **tiers)).points == points


def test_every_policy_category_has_phrases_in_every_language() -> None:
    book = shipped()
    for category in categories():
        for language in ("en", "de", "fr", "es", "it", "nl", "pt", "pl"):
            own = [
                p
                for p in book.phrases
                if p.language == language and p.group.startswith(f"content.{category.name}.")
            ]
            assert len(own) >= 20, (category.name, language)


OFFER = (
    "<p>Claim your 200% welcome bonus and 100 free spins at our online casino!</p>"
    "<p>Place your bets on tonight's match with the best odds. Deposit now, limited offer.</p>"
)


def test_an_offer_is_refused_naming_category_and_evidence() -> None:
    outcome, detail, reason = _check(_message("Your bonus is waiting", OFFER))
    assert (outcome, detail) == (Outcome.REJECT, "gambling")
    assert reason.startswith("prohibited content (gambling: gambling, betting and lotteries)")
    assert "free spins" in reason.casefold()


def test_a_deployment_enforces_a_subset() -> None:
    raw = _message("Your bonus is waiting", OFFER)
    assert _check(raw, frozenset({"drugs"}))[0] is Outcome.PASS
