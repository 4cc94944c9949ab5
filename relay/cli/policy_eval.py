"""The report of `relay policy eval`: totals, precision and recall, confusion matrix, and
each misjudged message with the verdicts that decided it."""

from collections import Counter
from pathlib import Path

from relay.cli.status_view import table
from relay.policy.corpus import PASS, Scores


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rules(labels: list[str]) -> list[str]:
    """Every label, and each rule with categories once more on its own (`P-CONTENT`)."""
    rules = sorted({x.split(":")[0] for x in labels if ":" in x})
    return sorted([*labels, *rules], key=lambda x: (x != PASS, x))


def report(scores: Scores, directory: Path, show_all: bool = False) -> str:
    total = len(scores.judged)
    lines = [
        f"{directory}: {total} messages, {scores.right} judged right ({scores.right / total:.1%})"
        if total
        else f"{directory}: no messages",
        "",
        "per verdict (label: messages so labelled; precision and recall of that verdict)",
    ]
    expected = {j.case.expect for j in scores.judged}
    rows = []
    for label in _rules(sorted(expected)):
        n, precision, recall = scores.precision_recall(label)
        rows.append((label, n, _ratio(precision), _ratio(recall)))
    lines += table(("LABEL", "MESSAGES", "PRECISION", "RECALL"), rows)

    languages: Counter[str] = Counter(j.case.language for j in scores.judged)
    right: Counter[str] = Counter(j.case.language for j in scores.judged if j.right)
    lines += ["", "per language"]
    lines += table(
        ("LANGUAGE", "MESSAGES", "RIGHT"),
        [(lang or "-", n, right[lang]) for lang, n in sorted(languages.items())],
    )

    labels = scores.labels()
    index = {label: str(i + 1) for i, label in enumerate(labels)}
    columns = [x for x in labels if any(scores.matrix[(r, x)] for r in labels)]
    lines += ["", "confusion matrix (rows: the label, columns: the judgement, by number)"]
    lines += table(
        ("#", "LABEL", *(index[c] for c in columns)),
        [
            (index[r], r, *(scores.matrix[(r, c)] or "." for c in columns))
            for r in labels
            if any(scores.matrix[(r, c)] for c in columns)
        ],
    )

    wrong = [j for j in scores.judged if show_all or not j.right]
    lines += ["", "every message" if show_all else f"misjudged ({len(wrong)})"]
    for j in wrong:
        mark = "ok " if j.right else "BAD"
        lines.append(f"  {mark} {j.case.path}: labelled {j.case.expect}, judged {j.judged}")
        for v in j.verdicts:
            if v.refuses or (not j.right and v.rule == j.case.expect.split(":")[0]):
                lines.append(f"        {v.rule} {v.outcome.value}: {v.reason}")
    return "\n".join(lines)
