"""P-SIZE: no line over 998 octets (RFC 5321 4.5.3.1.6)."""

import asyncio
import random

import pytest

from relay.config.schema import TenantSection
from relay.policy.checks.size import _BLOCK, MAX_LINE, LineLength, every_block_has_newline
from relay.policy.context import PolicyContext
from relay.policy.verdict import Outcome

TENANT = TenantSection(name="acme", domains=["acme.example"], networks=["127.0.0.1/32"])
HEAD = b"From: a@acme.example\r\nSubject: s\r\n\r\n"


@pytest.mark.parametrize(
    ("body", "outcome", "reason"),
    [
        (b"short line\r\n", Outcome.PASS, "no line longer than 998"),
        (b"x" * 998 + b"\r\n", Outcome.PASS, "no line longer than 998"),
        (b"x" * 999 + b"\r\n", Outcome.REJECT, "line 4 of the message is longer than 998"),
        (b"ok\r\n" + b"y" * 5000, Outcome.REJECT, "line 5 of the message"),
        (b"=\r\n".join([b"q" * 75] * 100), Outcome.PASS, "no line longer"),
    ],
    ids=["short", "998", "999", "last-line-long", "qp-soft-breaks"],
)
def test_line_length(body: bytes, outcome: Outcome, reason: str) -> None:
    ctx = PolicyContext(TENANT, "a@acme.example", ["b@inbox.example"], HEAD + body)
    verdict = asyncio.run(LineLength().check(ctx))
    assert verdict.outcome is outcome and reason in verdict.reason, verdict
    if outcome is Outcome.REJECT:
        assert verdict.reply().startswith("550 5.6.0 [P-SIZE] line ")


def test_line_length_agrees_with_measuring_every_line() -> None:
    """The block test (`every_block_has_newline`) finds a line too long wherever one is, on
    random messages whose line lengths cluster around the limit and whose lines fall on
    every offset against the blocks."""
    chooser = random.Random(5321)
    for _ in range(2000):
        lengths = [
            chooser.choice([0, 1, 76, 500, 997, 998, 999, 1000, 1500, 2500]) + chooser.randrange(3)
            for _ in range(chooser.randrange(1, 8))
        ]
        body = b"".join(b"x" * n + chooser.choice([b"\r\n", b"\n"]) for n in lengths)
        body += b"y" * chooser.choice([0, 10, 999, 1000])
        longest = max(len(line) for line in (HEAD + body).split(b"\n"))
        ctx = PolicyContext(TENANT, "a@acme.example", ["b@inbox.example"], HEAD + body)
        verdict = asyncio.run(LineLength().check(ctx))
        assert (verdict.outcome is Outcome.REJECT) == (longest > MAX_LINE + 1), lengths
        assert every_block_has_newline(HEAD + body) or longest >= _BLOCK
