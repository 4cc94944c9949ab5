"""End to end: a policy refusal is a 5xx citing its P-rule, and nothing is queued."""

import asyncio
import smtplib
import urllib.request
from email.policy import SMTP

import asyncpg
import pytest

from tests.peers import RelayProcess, Sink
from tests.smtp_client import message, submission

pytestmark = pytest.mark.e2e


def _queued(dsn: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM messages"))
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.mark.parametrize(
    ("change", "reply"),
    [
        ({"From": "ceo@bank.example"}, b"5.7.1 [P-HDR-FROM] From domain bank.example"),
        ({"Reply-To": "x@elsewhere.example"}, b"5.7.1 [P-HDR-ALIGN] Reply-To domain"),
        ({"Date": None}, b"5.7.1 [P-HDR-SANE] the Date header is missing"),
        ({"List-Id": "<news.acme.example>", "Subject": "Re: offer"}, b"5.7.1 [P-SUBJECT]"),
    ],
    ids=["P-HDR-FROM", "P-HDR-ALIGN", "P-HDR-SANE", "P-SUBJECT"],
)
def test_policy_refusals_cite_the_rule(
    relay: RelayProcess, sink: Sink, change: dict[str, str | None], reply: bytes
) -> None:
    msg = message()
    for name, value in change.items():
        del msg[name]
        if value is not None:
            msg[name] = value
    with (
        submission(relay.config.submission_port) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        client.sendmail("app@acme.example", ["alice@inbox.example"], msg.as_bytes(policy=SMTP))
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(reply)
    assert _queued(relay.config.dsn) == 0 and sink.messages == []
    metrics = urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()
    rule = reply.split(b"[")[1].split(b"]")[0].decode()
    assert f'relay_policy_verdicts_total{{rule="{rule}",verdict="reject"}} 1.0' in metrics
