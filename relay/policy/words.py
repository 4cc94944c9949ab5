"""Words as the text rules compare them, whatever the language and the way they are written.

Text and phrase data go through the same steps, so they meet in one form:
- Unicode NFKC (compatibility forms: full-width letters, ligatures, `ﬁ`), then case folding
  (which also makes `ß` `ss`);
- words are runs of letters and digits; an apostrophe or hyphen separates words, so
  "you're" is "you re" and "E-Mail" is "e mail" on both sides;
- a word's stem comes from the Snowball stemmer of each language the rules look at
  (PyStemmer, in C), so "subscribed", "subscribing" and "subscribes" meet in "subscrib";
- last, marks are dropped (`é` to `e`, `ł` to `l`), so text typed without accents still
  matches. German umlauts written out (`ue`) meet `ü` in the German stemmer, and in
  `skeleton` for names.

A message's words are made once and shared by every check (`MessageWords`); stems are
computed per distinct word and language, and only for the languages the text is written in
(`languages`, from stopword counts) plus English, which spam mixes into every language.
"""

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache, cached_property
from itertools import chain

import snowballstemmer

STEMMERS = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
    "pl": "polish",
}
"""The languages the rules read, by ISO 639-1 code, and their Snowball stemmer."""

_WORD = re.compile(r"[^\W_]+")
_MARKS = re.compile(r"[\u0300-\u036f]+")
_LETTERS = str.maketrans(
    {"ł": "l", "ø": "o", "đ": "d", "ħ": "h", "\u0131": "i", "æ": "ae", "œ": "oe"}
)  # letters that NFD does not split into a base letter and a mark
_UMLAUTS = re.compile(r"(?<=[aou])e")


def casefold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def unmark(text: str) -> str:
    """`text` without diacritics: `café` to `cafe`, `łódź` to `lodz` (case-folded input)."""
    if text.isascii():
        return text
    return _MARKS.sub("", unicodedata.normalize("NFD", text)).translate(_LETTERS)


def words(text: str) -> list[str]:
    """The words of `text` (already case-folded)."""
    return _WORD.findall(text)


def fold(text: str) -> str:
    """Case-folded, unmarked, one space between words: how names and phrases compare."""
    return " ".join(words(unmark(casefold(text))))


def skeleton(text: str) -> str:
    """`fold`, and `ae`, `oe`, `ue` read as the umlauts they stand for, so that Müller,
    Mueller and Muller are one name (for names, streets and cities, not for prose)."""
    return _UMLAUTS.sub("", fold(text))


@cache
def stemmer(language: str) -> "snowballstemmer.Stemmer":  # type: ignore[name-defined]
    return snowballstemmer.stemmer(STEMMERS[language])


def stem_phrase(phrase: str, language: str) -> str:
    """The phrase as its words' stems, unmarked, one space apart."""
    stems = stemmer(language).stemWords(words(casefold(phrase)))
    return " ".join(words(unmark(" ".join(stems))))


_WORD_OR_STOP = re.compile(
    '[^\\W_]+|[.,;:!?()\\[\\]{}|/"\u2022\u00b7\u2013\u2014\u201c\u201d\u201e\u00ab\u00bb]'
)  # words, or the punctuation that ends a phrase: stops, commas, brackets, quotes, dashes
BREAK = "|"
"""Stands for punctuation between words in `MessageWords.marked`: no phrase runs across it
("no vape, pod" holds no "vape pod")."""


def _tokens(text: str) -> list[str]:
    """The words of `text` with `BREAK` where punctuation stood between them, splitting
    each distinct whitespace-separated chunk once (a newsletter repeats its chunks: a
    quarter less time than one regular expression over the text)."""
    chunks = text.split()
    split = {
        chunk: [chunk]
        if chunk.isalnum()  # most chunks are one plain word: no regular expression for them
        else [t if t[0].isalnum() else BREAK for t in _WORD_OR_STOP.findall(chunk)]
        for chunk in set(chunks)
    }
    return list(chain.from_iterable(map(split.__getitem__, chunks)))


def _unmark_word(word: str) -> str:
    return word if word.isascii() else unmark(word) or word


class MessageWords:
    """The words of one message's text, and their stems in the languages it uses.

    The text is case-folded and split once; everything else is computed per distinct word
    (a newsletter repeats its words: 9,000 words, 1,200 distinct) and joined in C."""

    def __init__(self, text: str, stopwords: Mapping[str, Iterable[str]]) -> None:
        self.marked = _tokens(casefold(text))
        self.tokens = list(filter(BREAK.__ne__, self.marked))
        self._distinct = list(set(self.tokens))
        self._unmarked = {w: _unmark_word(w) for w in self._distinct}
        self._stopwords = stopwords
        self._stems: dict[str, str] = {}

    def _joined(self, form: Mapping[str, str]) -> str:
        return f" {' '.join(map(form.__getitem__, self.tokens))} "

    @cached_property
    def _skeletons(self) -> dict[str, str]:
        return {w: _UMLAUTS.sub("", u) if "e" in u else u for w, u in self._unmarked.items()}

    @cached_property
    def skeleton(self) -> str:
        """` w1 w2 ... ` as `skeleton` makes them (unmarked, unstemmed, `ue` read as `ü`),
        a space before and after every word: for names, streets, places and `*` phrases."""
        return self._joined(self._skeletons)

    @cached_property
    def vocabulary(self) -> frozenset[str]:
        """The distinct words of `skeleton`."""
        return frozenset(self._skeletons.values())

    @cached_property
    def languages(self) -> tuple[str, ...]:
        """English, and every language of which at least two distinct stopwords occur and
        at least a fifth as many as of the language with most."""
        present = set(self._unmarked.values())
        scores = {
            language: len(present.intersection(stops))
            for language, stops in self._stopwords.items()
        }
        top = max(scores.values(), default=0)
        chosen = [lang for lang, n in scores.items() if n >= 2 and n * 5 >= top]
        return tuple(dict.fromkeys(["en", *sorted(chosen, key=lambda x: -scores[x])]))

    def stems(self, language: str) -> str:
        """` s1 s2 | s3 ... `: every word's stem in `language`, unmarked, space-delimited,
        with `BREAK` where punctuation separated words."""
        cached = self._stems.get(language)
        if cached is None:
            found = stemmer(language).stemWords(self._distinct)
            stems = {w: _unmark_word(s) or w for w, s in zip(self._distinct, found, strict=True)}
            stems[BREAK] = BREAK
            cached = f" {' '.join(map(stems.__getitem__, self.marked))} "
            self._stems[language] = cached
        return cached
