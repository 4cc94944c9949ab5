"""The phrase data of the text rules, per language, and finding it in a message.

Each language has a file `relay/policy/data/phrases/<code>.toml` (the format is described in
`relay/policy/data/phrases/README.md`): its stopwords, and lists of phrases by group:
`consent`, `unsubscribe`, `promotion`, `reporting`, and per P-CONTENT category `strong`,
`medium`, `weak` and `against`. Phrases are written as people write them; `relay.policy.words`
turns them into stems, so one phrase covers its inflections.

All phrases of a language go into one Aho-Corasick automaton over the message's stems in
that language, each key ` stem stem ` bounded by spaces, so a match is a run of whole words.
A phrase with `*` at its start or end (`*casino*`, for compounds) is matched on the
unstemmed words instead, in one automaton for all languages. A message is scanned once per
language it is written in, whatever the number of phrases.
"""

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from ahocorasick_rs import AhoCorasick, Implementation, MatchKind

from relay.policy.words import STEMMERS, MessageWords, casefold, skeleton, stem_phrase, unmark


@dataclass(frozen=True)
class Phrase:
    text: str
    """As written in the data file: the evidence a verdict quotes."""
    language: str
    group: str
    """`consent`, `unsubscribe`, `promotion`, `reporting`, or `content.CATEGORY.TIER`."""


class _Automaton:
    """Keys (distinct strings) to the phrases they stand for, found in one pass."""

    def __init__(self, keyed: Iterable[tuple[str, Phrase]]) -> None:
        self.phrases: dict[str, list[Phrase]] = {}
        for key, phrase in keyed:
            self.phrases.setdefault(key, []).append(phrase)
        self.keys = list(self.phrases)
        self._automaton = (
            AhoCorasick(self.keys, matchkind=MatchKind.Standard, implementation=Implementation.DFA)
            if self.keys
            else None
        )

    def find(self, haystack: str, where: str, found: "Found") -> None:
        """Add every phrase whose key occurs in `haystack` (named `where`) to `found`."""
        if self._automaton is None:
            return
        for index, start, _ in self._automaton.find_matches_as_indexes(haystack, overlapping=True):
            for phrase in self.phrases[self.keys[index]]:
                found.places.setdefault(phrase, []).append((where, start))


@dataclass
class Found:
    """The phrases found in one message, and where: (which text, character offset)."""

    places: dict[Phrase, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def phrases(self) -> set[Phrase]:
        return set(self.places)

    def group(self, group: str) -> list[Phrase]:
        return sorted((p for p in self.places if p.group == group), key=lambda p: p.text)

    def near(
        self, first: str, then: str, within: int = 120, either_order: bool = False
    ) -> tuple[Phrase, Phrase] | None:
        """A phrase of group `first` followed (or, `either_order`, preceded) within `within`
        characters of the same text (about fifteen words) by another of group `then`."""
        later = [(where, at, p) for p in self.group(then) for where, at in self.places[p]]
        for phrase in self.group(first):
            for where, at in self.places[phrase]:
                for other_where, other_at, other in later:
                    distance = other_at - at if not either_order else abs(other_at - at)
                    if (
                        other_where == where
                        and other.text != phrase.text
                        and 0 < distance <= within
                    ):
                        return phrase, other
        return None


def _wildcard_key(text: str) -> str:
    """` casino` (prefix), `casino ` (suffix) or `casino` (inside a word) for `casino*`,
    `*casino`, `*casino*`, on the message's unstemmed words (`MessageWords.skeleton`)."""
    inner = skeleton(text.strip("*"))
    return ("" if text.startswith("*") else " ") + inner + ("" if text.endswith("*") else " ")


class Phrasebook:
    def __init__(self, phrases: Iterable[Phrase], stopwords: dict[str, list[str]]) -> None:
        self.phrases = tuple(phrases)
        self.stopwords = stopwords
        by_language: dict[str, list[tuple[str, Phrase]]] = {}
        wildcards: list[tuple[str, Phrase]] = []
        for phrase in self.phrases:
            if phrase.text.startswith("*") or phrase.text.endswith("*"):
                wildcards.append((_wildcard_key(phrase.text), phrase))
                continue
            # text typed without accents stems differently ("zapisales" keeps its ending),
            # so a phrase with accents is also looked for as its unaccented spelling stems
            for spelling in {phrase.text, unmark(casefold(phrase.text))}:
                stems = stem_phrase(spelling, phrase.language)
                if stems:
                    by_language.setdefault(phrase.language, []).append((f" {stems} ", phrase))
        self._languages = {lang: _Automaton(keyed) for lang, keyed in by_language.items()}
        self._wildcards = _Automaton(wildcards)

    def words(self, text: str) -> MessageWords:
        return MessageWords(text, self.stopwords)

    def find(self, words: MessageWords) -> Found:
        """Every phrase of the languages `words` is written in (and English) found in it."""
        found = Found()
        self._wildcards.find(words.skeleton, "*", found)
        for phrase in [p for p in found.places if p.language not in words.languages]:
            del found.places[phrase]
        for language in words.languages:
            automaton = self._languages.get(language)
            if automaton is not None:
                automaton.find(words.stems(language), language, found)
        return found


def _lists(table: dict[str, object], prefix: str, language: str) -> Iterable[Phrase]:
    for name, value in table.items():
        group = f"{prefix}{name}"
        if isinstance(value, list):
            yield from (Phrase(str(text), language, group) for text in value if str(text).strip())
        elif isinstance(value, dict):
            yield from _lists(value, f"{group}.", language)


def load(extra_dir: Path | None = None) -> Phrasebook:
    """The shipped phrase files, and a deployment's files of the same shape (`<code>.toml`
    in `extra_dir`), whose lists are added to the shipped ones."""
    shipped = resources.files("relay.policy.data").joinpath("phrases")
    phrases: list[Phrase] = []
    stopwords: dict[str, list[str]] = {}
    for language in STEMMERS:
        sources = [shipped.joinpath(f"{language}.toml").read_text(encoding="utf-8")]
        if extra_dir is not None and (extra_dir / f"{language}.toml").exists():
            sources.append((extra_dir / f"{language}.toml").read_text(encoding="utf-8"))
        for source in sources:
            table = tomllib.loads(source)
            stopwords.setdefault(language, []).extend(
                unmark(casefold(w)) for w in table.pop("stopwords", [])
            )
            phrases.extend(_lists(table, "", language))
    return Phrasebook(phrases, stopwords)


@cache
def shipped() -> Phrasebook:
    """The shipped phrase data, built once per process (at the first message)."""
    return load()
