"""POLICY.md on mail as people write it: every message of the labelled corpus is judged as
labelled, in both halves (`tests/policy_corpus/README.md`)."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli.policy_eval import report
from relay.policy.corpus import Judged, judge, load, score
from relay.policy.pipeline import Pipeline

CORPUS = Path(__file__).parent / "policy_corpus"


@pytest.mark.parametrize("half", ["dev", "heldout"])
def test_every_message_is_judged_as_labelled(half: str) -> None:
    cases = load(CORPUS / half)
    pipeline = Pipeline()

    async def judge_all() -> list[Judged]:
        return [await judge(case, pipeline) for case in cases]

    scores = score(asyncio.run(judge_all()))
    assert len(cases) >= 200
    assert scores.right == len(cases), report(scores, CORPUS / half)


def test_the_corpus_covers_every_rule_and_category_in_three_languages() -> None:
    """At least 5 violations and 5 hard negatives per rule and category, each set in at
    least 3 languages (the corpus holds 8 and 8, in 5 or more)."""
    cases = load(CORPUS)
    labels = {c.expect for c in cases} - {"pass"}
    assert len([x for x in labels if x.startswith("P-CONTENT:")]) == 13
    for label in labels:
        violations = [c for c in cases if c.expect == label]
        negatives = [c for c in cases if c.expect == "pass" and c.hard_negative == label]
        assert len(violations) >= 5 and len(negatives) >= 5, label
        assert len({c.language for c in violations}) >= 3, label
        assert len({c.language for c in negatives}) >= 3, label


def _relay(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, check=False
    )


def test_eval_reports_a_misjudged_message_and_exits_1(tmp_path: Path) -> None:
    """`relay policy eval` on a corpus whose one label is wrong: the confusion matrix and
    the misjudged file with the verdict that decided it, and exit status 1."""
    source = CORPUS / "dev" / "en-de"
    data = (source / "corpus.toml").read_text(encoding="utf-8")
    tenants = data[: data.index("[[messages]]")]
    message = "en-cascade-password-reset.eml"
    (tmp_path / message).write_bytes((source / message).read_bytes())
    (tmp_path / "corpus.toml").write_text(
        tenants + f'[[messages]]\nfile = "{message}"\ntenant = "cascade"\n'
        'expect = "P-CONTENT:gambling"\nlanguage = "en"\n',
        encoding="utf-8",
    )
    result = _relay("policy", "eval", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "1 messages, 0 judged right" in result.stdout
    assert "confusion matrix" in result.stdout and "misjudged (1)" in result.stdout
    assert "labelled P-CONTENT:gambling, judged pass" in result.stdout


def test_consent_import_help_lists_the_columns_it_reads() -> None:
    from relay.policy.consent_records import COLUMNS

    shown = _relay("consent", "import", "--help").stdout
    assert all(f"  {column} " in shown for column in COLUMNS)
