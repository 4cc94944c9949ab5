"""A labelled corpus of messages, run through the policy pipeline offline and scored.

A corpus directory holds, at any depth, `corpus.toml` files, each beside the `.eml` files it
labels: the tenants who send them (`[[tenants]]`, as in relay.toml), the sending service's
own contacts (`service_contacts`), and one `[[messages]]` entry per file with the verdict it
should get: `pass`, the one rule it breaks (`P-IDENTITY`), or for P-CONTENT the category
(`P-CONTENT:gambling`). The format is described in `tests/policy_corpus/README.md`.

Each message is judged as the relay judges it at DATA, without what needs a database or DNS
(suppressions, consent records, domain verification, DKIM keys): line endings made CRLF, a
Message-ID added when missing, every MAIL and DATA check run, and the refusals compared with
the label. A message is judged right when it is refused for exactly the rule (and category)
of its label, or for nothing when it should pass.
"""

import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import getaddresses, parseaddr
from pathlib import Path

from relay.config.schema import TenantSection
from relay.policy.context import PolicyContext
from relay.policy.pipeline import Pipeline
from relay.policy.verdict import Verdict

PASS = "pass"


@dataclass(frozen=True)
class Case:
    path: Path
    tenant: TenantSection
    expect: str
    service_contacts: tuple[str, ...]
    language: str = ""
    kind: str = ""
    hard_negative: str = ""
    mail_from: str = ""
    note: str = ""


@dataclass(frozen=True)
class Judged:
    case: Case
    verdicts: tuple[Verdict, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """What the pipeline decided, in the corpus's words: the refusing rules (with the
        P-CONTENT category), or `pass`."""
        refused = sorted(
            f"{v.rule}:{v.detail}" if v.detail else v.rule for v in self.verdicts if v.refuses
        )
        return tuple(refused) or (PASS,)

    @property
    def judged(self) -> str:
        return " + ".join(self.labels)

    @property
    def right(self) -> bool:
        return self.labels == (self.case.expect,)


class CorpusError(Exception):
    """A corpus file that cannot be read as described."""


def load(directory: Path) -> list[Case]:
    cases: list[Case] = []
    files = sorted(directory.rglob("corpus.toml"))
    if not files:
        raise CorpusError(f"{directory}: no corpus.toml below it")
    for labels in files:
        try:
            data = tomllib.loads(labels.read_text(encoding="utf-8"))
            # a tenant must be able to submit; how it does is no matter offline
            tenants = {
                t["name"]: TenantSection(**{"networks": ["192.0.2.0/24"], **t})
                for t in data.get("tenants", [])
            }
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise CorpusError(f"{labels}: {exc}") from exc
        contacts = tuple(data.get("service_contacts", []))
        for entry in data.get("messages", []):
            if entry.get("tenant") not in tenants:
                raise CorpusError(f"{labels}: {entry.get('file')}: unknown tenant")
            cases.append(
                Case(
                    path=labels.parent / entry["file"],
                    tenant=tenants[entry["tenant"]],
                    expect=entry["expect"],
                    service_contacts=contacts,
                    language=entry.get("language", ""),
                    kind=entry.get("kind", ""),
                    hard_negative=entry.get("hard_negative", ""),
                    mail_from=entry.get("mail_from", ""),
                    note=entry.get("note", ""),
                )
            )
    return cases


def wire_form(raw: bytes) -> bytes:
    """CRLF line endings, as the listener stores every message (RFC 5321 2.3.8)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def judge(case: Case, pipeline: Pipeline) -> Judged:
    raw = wire_form(case.path.read_bytes())
    ctx = PolicyContext(case.tenant, raw=raw, service_contacts=case.service_contacts)
    if not ctx.headers("Message-ID"):  # the listener adds one, as P-HDR-SANE allows
        raw = b"Message-ID: <corpus." + case.path.stem.encode() + b"@relay.invalid>\r\n" + raw
        ctx = PolicyContext(case.tenant, raw=raw, service_contacts=case.service_contacts)
    ctx.mail_from = case.mail_from or parseaddr(" ".join(ctx.headers("From")))[1]
    ctx.recipients = [
        address for _, address in getaddresses([*ctx.headers("To"), *ctx.headers("Cc")]) if address
    ]
    verdicts = await pipeline.run("mail", ctx, stop_at_refusal=False)
    verdicts += await pipeline.run("data", ctx, stop_at_refusal=False)
    return Judged(case, tuple(verdicts))


@dataclass
class Scores:
    judged: list[Judged]
    matrix: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for j in self.judged:
            self.matrix[(j.case.expect, j.judged)] += 1

    @property
    def right(self) -> int:
        return sum(j.right for j in self.judged)

    def labels(self) -> list[str]:
        seen = {j.case.expect for j in self.judged} | {j.judged for j in self.judged}
        return sorted(seen, key=lambda x: (x != PASS, x))

    def precision_recall(self, label: str) -> tuple[int, float | None, float | None]:
        """(messages labelled so, precision, recall) of the verdict `label`; a label that
        names a rule without a category counts every category of it (`P-CONTENT`)."""

        def names(value: str) -> bool:
            return value == label or value.startswith(label + ":")

        expected = [j for j in self.judged if names(j.case.expect)]
        judged = [j for j in self.judged if any(names(x) for x in j.labels)]
        hits = [j for j in expected if j.right or (":" not in label and names(j.judged))]
        precision = (
            len([j for j in judged if names(j.case.expect)]) / len(judged) if judged else None
        )
        recall = len(hits) / len(expected) if expected else None
        return len(expected), precision, recall


def score(judged: Iterable[Judged]) -> Scores:
    return Scores(list(judged))
