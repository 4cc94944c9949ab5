"""P-CONTENT: no mail about prohibited goods and services (DATA phase, all mail).

The categories of POLICY.md and their scoring are in `relay/policy/data/content.toml`; the
phrases, per language and category in four tiers (strong, medium, weak, against), in
`relay/policy/data/phrases/`. The Subject and the visible text are read in every language
they are written in (`relay.policy.reading`); a category's score weighs the phrases of its
tiers, counts generic selling language only alongside the category's own, and subtracts
the language of news, warnings and prevention, so a pharmacy's shipping notice, a report
on a lottery ban or a trip to Las Vegas passes while an offer of the same goods does not.
A refusal names the category and quotes its evidence. A deployment enforces a subset of
the categories with `[policy] content_categories`.
"""

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from relay.policy.context import PolicyContext
from relay.policy.phrasebook import Phrase
from relay.policy.reading import message_words, phrases, rendered
from relay.policy.verdict import Verdict
from relay.policy.words import fold

TIERS = ("strong", "medium", "weak", "against")
_SCORED = ("content.", "promotion", "reporting")


@dataclass(frozen=True)
class Category:
    name: str
    label: str
    threshold: float


@dataclass(frozen=True)
class Score:
    category: Category
    points: float
    evidence: tuple[str, ...]
    """The category's own phrases found, strongest first."""


def _distinct(found: Iterable[Phrase]) -> list[str]:
    return sorted({fold(p.text): p.text for p in found}.values(), key=str.casefold)


@cache
def _data() -> dict[str, Any]:
    text = resources.files("relay.policy.data").joinpath("content.toml").read_text("utf-8")
    return tomllib.loads(text)


@cache
def categories() -> tuple[Category, ...]:
    return tuple(
        Category(name, table["label"], float(table["threshold"]))
        for name, table in _data()["categories"].items()
    )


def score(category: Category, found: Iterable[Phrase], priced: bool = False) -> Score:
    """The category's score for the phrases `found` in a message (content.toml says how);
    `priced`: the message states a price."""
    weights = _data()["scoring"]
    groups: dict[str, list[Phrase]] = {}
    for phrase in found:
        groups.setdefault(phrase.group, []).append(phrase)
    prefix = f"content.{category.name}."
    if not any(group.startswith(prefix) for group in groups):
        return Score(category, 0.0, ())
    tiers: dict[str, list[str]] = {}
    seen: set[str] = set()  # a phrase listed in two tiers (or languages) counts once, highest
    for tier in TIERS:
        own = _distinct(groups.get(prefix + tier, ()))
        tiers[tier] = [text for text in own if fold(text) not in seen]
        seen |= {fold(text) for text in own}
    own_points = (
        len(tiers["strong"]) * weights["strong"]
        + len(tiers["medium"]) * weights["medium"]
        + min(len(tiers["weak"]), weights["weak_cap"]) * weights["weak"]
    )
    points = own_points + len(tiers["against"]) * weights["against"]
    if own_points >= 2:
        promotion = len(_distinct(groups.get("promotion", ()))) + priced
        points += min(promotion, weights["promotion_cap"]) * weights["promotion"]
    reporting = len(_distinct(groups.get("reporting", ())))
    points += min(reporting, weights["reporting_cap"]) * weights["reporting"]
    return Score(category, points, (*tiers["strong"], *tiers["medium"], *tiers["weak"]))


CURRENCY_SIGNS = ("€", "$", "£", "¥", "₽", "₺", "zł")
CURRENCY_WORDS = frozenset(
    "eur euro euros usd gbp chf pln zl brl mxn ars clp cop dkk sek nok czk huf ron".split()
)


def _priced(ctx: PolicyContext) -> bool:
    """A price in the Subject or the text: a currency sign, or a currency code as a word."""
    text = rendered(ctx).text
    if any(sign in text for sign in CURRENCY_SIGNS):
        return True
    return not CURRENCY_WORDS.isdisjoint(message_words(ctx).vocabulary)


class ProhibitedContent:
    rule = "P-CONTENT"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        found = [p for p in phrases(ctx).places if p.group.startswith(_SCORED)]
        enforced = ctx.content_categories
        priced = _priced(ctx)
        scores = [
            score(c, found, priced) for c in categories() if enforced is None or c.name in enforced
        ]
        refused = [s for s in scores if s.points >= s.category.threshold]
        if refused:
            top = max(refused, key=lambda s: s.points - s.category.threshold)
            shown = ", ".join(f'"{e}"' for e in top.evidence[:6])
            return Verdict.reject(
                self.rule,
                f"prohibited content ({top.category.name}: {top.category.label}), "
                f"score {top.points:g} of {top.category.threshold:g}: {shown}",
                detail=top.category.name,
            )
        best = max(scores, key=lambda s: s.points, default=None)
        if best is None or best.points <= 0:
            return Verdict.ok(self.rule, "no prohibited category scored")
        return Verdict.ok(
            self.rule,
            f"highest score {best.points:g} of {best.category.threshold:g} for "
            f"{best.category.name}",
        )
