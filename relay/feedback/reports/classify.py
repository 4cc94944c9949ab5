"""What a failed delivery means for the recipient's address: the bounce classifier.

A remote server's answer is an SMTP reply (RFC 5321 4.2) with, usually, an RFC 3463 enhanced
status code (`class.subject.detail`) and free text. The code alone is too coarse: `5.7.1` is
used for spam blocks, blocklisted IPs and unknown users alike, and Microsoft answers
`5.1.10` for an unknown recipient where RFC 7505 meant a null MX. So, as KumoMTA's bounce
classifier does, regular expressions over the reply text decide first (the shipped rules in
`relay/feedback/reports/data/bounce_rules.toml`, a deployment's own file before them), and only a
reply no rule recognises falls back to the code table in the same file: the exact code, then
`class.subject`, then `class`.

`hard` is the suppression decision (P-SUPPRESS, P-BOUNCE): only a permanent (5xx, RFC 3463
class 5) verdict that the mailbox or the domain does not exist suppresses the address. A full
mailbox is soft, and policy or reputation refusals are not the recipient's fault, so they
throttle the sender (P-COMPLAINT, P-BOUNCE) but never suppress the recipient.
"""

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

_MAX_TEXT = 4000  # characters of reply text looked at; SMTP reply lines are <= 512 (RFC 5321)


class Category(StrEnum):
    """Why a delivery failed, as far as the sender can act on it."""

    BAD_MAILBOX = "bad-mailbox"  # the mailbox does not exist or is disabled
    BAD_DOMAIN = "bad-domain"  # the domain does not exist or accepts no mail
    MAILBOX_FULL = "mailbox-full"  # over quota: may clear, never suppress
    POLICY = "policy"  # refused for the message: spam or content filter, authentication, size
    REPUTATION = (
        "reputation"  # refused for the sender: blocklisted IP/domain, reputation rate limit
    )
    TRANSIENT = "transient"  # greylisting, try later, expired after temporary failures
    UNKNOWN = "unknown"  # nothing recognised the reply


_SUPPRESSING = frozenset({Category.BAD_MAILBOX, Category.BAD_DOMAIN})

# RFC 3463 2: status-code = class "." subject "." detail; class 2, 4 or 5.
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# A reply line "550 5.1.1 text" or "550-5.1.1 text" (RFC 5321 4.2.1, RFC 2034 4).
_REPLY_STATUS = re.compile(r"(?<![\w.])([245])\d\d[ -]+#?([245]\.\d{1,3}\.\d{1,3})(?!\d)(?!\.\d)")
# An enhanced code anywhere, e.g. qmail's "(#5.1.1)"; not inside an IP address or version.
_ANY_STATUS = re.compile(r"(?<![\w.])#?([45]\.\d{1,3}\.\d{1,3})(?!\d)(?!\.\d)")
# A basic reply code alone ("550 User unknown", Yahoo's "554: delivery error").
_BASIC = re.compile(r"(?<![\w.])([245])\d\d(?=[ -]|:\s|:?$)")
# The start of a reply: its code and enhanced code, which every line of a multi-line reply
# repeats ("550-5.1.1 The email account ... / 550-5.1.1 double-checking ...").
_HEAD = re.compile(r"([245]\d\d)[ -]+(?:([245]\.\d{1,3}\.\d{1,3})(?:\s+|$))?")


def reply_text(text: str) -> str:
    """A reply as one line: white space collapsed, the codes that start each line of a
    multi-line reply (RFC 5321 4.2.1) written once, bounded in length."""
    line = " ".join(text[:_MAX_TEXT].split())
    head = _HEAD.match(line)
    if head is None:
        return line
    code, status = head.groups()
    repeated = re.compile(
        r"\s" + code + r"[ -]+" + (re.escape(status) + r"(?:\s+|$)" if status else "")
    )
    rest = repeated.sub(" ", line[head.end() :])
    return " ".join(f"{code} {status or ''} {rest}".split())


def reply_status(text: str) -> str | None:
    """The RFC 3463 code a reply text carries: the one after the reply code, else one standing
    alone, else the class of the basic reply code as `X.0.0`; None if there is none."""
    head = text[:_MAX_TEXT]
    match = _REPLY_STATUS.search(head)
    if match:
        return match.group(2)
    match = _ANY_STATUS.search(head)
    if match:
        return match.group(1)
    match = _BASIC.search(head)
    if match:
        return f"{match.group(1)}.0.0"
    return None


def _status(value: str | None) -> str | None:
    """A DSN `Status:` value (RFC 3464 2.3.4), which may carry a comment: "5.0.0 (failure)"."""
    match = _STATUS.match(value.strip()) if value else None
    return match.group(0) if match else None


@dataclass(frozen=True)
class Rule:
    """One text rule: if `pattern` matches the reply, the verdict is `category`. `status`, if
    set, limits the rule to codes that start with it, component by component ("5", "5.7")."""

    name: str
    category: Category
    pattern: re.Pattern[str]
    status: tuple[str, ...] = ()

    def applies(self, status: str | None, text: str) -> bool:
        if self.status:
            parts = tuple(status.split(".")) if status else ()
            if parts[: len(self.status)] != self.status:
                return False
        return self.pattern.search(text) is not None


@dataclass(frozen=True)
class Rules:
    text: tuple[Rule, ...]
    codes: Mapping[str, Category]  # "5.1.1", "5.7" or "4" -> category


@dataclass(frozen=True)
class Classification:
    category: Category
    hard: bool  # suppress the address (P-SUPPRESS)
    status: str | None  # the RFC 3463 code the verdict used, if any
    rule: str  # "text:NAME", "code:5.1.1", "code:5.7", "code:5" or "none": for logs and audit

    @property
    def permanent(self) -> bool:
        return self.status is not None and self.status.startswith("5")


def _category(value: Any, where: str) -> Category:
    try:
        return Category(value)
    except ValueError:
        known = ", ".join(c.value for c in Category)
        raise ValueError(f"{where}: unknown category {value!r} (expected one of {known})") from None


def _rules(document: dict[str, Any], source: str) -> tuple[list[Rule], dict[str, Category]]:
    unknown = set(document) - {"rule", "codes"}
    if unknown:
        raise ValueError(f"{source}: unknown top-level keys {sorted(unknown)}")
    rules = []
    for index, raw in enumerate(document.get("rule", [])):
        where = f"{source}: rule[{index}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a table")
        extra = set(raw) - {"name", "category", "pattern", "status"}
        missing = {"name", "category", "pattern"} - set(raw)
        if extra or missing:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}, missing {sorted(missing)}")
        where = f"{source}: rule {raw['name']!r}"
        try:
            pattern = re.compile(str(raw["pattern"]), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{where}: bad pattern: {exc}") from None
        status = str(raw.get("status", ""))
        if status and not re.fullmatch(r"[245](?:\.\d{1,3}){0,2}", status):
            raise ValueError(f"{where}: status {status!r} is not a code prefix such as 5.7")
        rules.append(
            Rule(
                str(raw["name"]),
                _category(raw["category"], where),
                pattern,
                tuple(status.split(".")) if status else (),
            )
        )
    codes = {}
    for key, value in document.get("codes", {}).items():
        if not re.fullmatch(r"[245](?:\.\d{1,3}){0,2}", key):
            raise ValueError(f"{source}: codes key {key!r} is not a code such as 5.1.1, 5.7 or 4")
        codes[key] = _category(value, f"{source}: codes {key!r}")
    return rules, codes


def load_rules(extra_path: Path | None = None) -> Rules:
    """The shipped rules, with a deployment's file (same shape) in front: its text rules are
    checked before the shipped ones, its `[codes]` entries replace the shipped ones.
    Raises ValueError naming the file and rule for anything it does not understand."""
    shipped = (
        resources.files("relay.feedback.reports.data").joinpath("bounce_rules.toml").read_text()
    )
    rules, codes = _rules(tomllib.loads(shipped), "bounce_rules.toml")
    if extra_path is not None:
        with extra_path.open("rb") as handle:
            extra_rules, extra_codes = _rules(tomllib.load(handle), str(extra_path))
        rules = extra_rules + rules
        codes.update(extra_codes)
    return Rules(tuple(rules), MappingProxyType(codes))


@cache
def default_rules() -> Rules:
    """The shipped rules, compiled once."""
    return load_rules()


def classify(status: str | None, text: str = "", *, rules: Rules | None = None) -> Classification:
    """Classify a failure from its RFC 3463 code (a DSN's Status, or None) and the reply text
    (the whole reply as received, reply code included, e.g. "550 5.1.1 user unknown").

    Without a usable `status` the code is taken from the text. Text rules decide first; the
    code table decides the rest.
    """
    rules = rules or default_rules()
    line = reply_text(text)
    code = _status(status) or reply_status(line)
    hard_class = code is not None and code.startswith("5")
    for rule in rules.text:
        if rule.applies(code, line):
            return Classification(
                rule.category,
                hard_class and rule.category in _SUPPRESSING,
                code,
                f"text:{rule.name}",
            )
    if code is not None:
        klass, subject, _detail = code.split(".")
        for key in (code, f"{klass}.{subject}", klass):
            category = rules.codes.get(key)
            if category is not None:
                return Classification(
                    category, hard_class and category in _SUPPRESSING, code, f"code:{key}"
                )
    return Classification(Category.UNKNOWN, False, code, "none")
