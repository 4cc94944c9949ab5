"""P-UNSUB with the relay's own signed one-click URI (RFC 8058)."""

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import re
import time
from pathlib import Path

import pytest

from relay.feedback.privacy.unsubscribe import LIFETIME_DAYS, BadToken, Unsubscribe, sign, verify
from relay.policy.context import PolicyContext
from relay.policy.pipeline import Pipeline
from relay.policy.verdict import Outcome
from tests.support.messages import BULK_TENANT, newsletter
from tests.support.peers import Amend, RelayConfig, Sink, running
from tests.support.smtp_client import submission

SECRET = b"k" * 32
REQUEST = Unsubscribe("acme", "alice@inbox.example", "<n1@acme.example>")


def test_tokens_verify_and_resist_forgery() -> None:
    token = sign(SECRET, REQUEST)
    assert verify(SECRET, token) == REQUEST
    payload, mac = token.split(".")
    forged = sign(SECRET, Unsubscribe("acme", "bob@inbox.example", "<n1@acme.example>"))
    for bad in (
        f"{forged.split('.')[0]}.{mac}",  # another recipient under this signature
        f"{payload}.{mac[:-2]}AA",  # altered signature
        sign(b"x" * 32, REQUEST),  # another secret
        "garbage",
        "",
    ):
        with pytest.raises(BadToken):
            verify(SECRET, bad)


def test_tokens_expire_after_their_lifetime() -> None:
    today = int(time.time() // 86400)
    assert verify(SECRET, sign(SECRET, REQUEST, day=today - LIFETIME_DAYS)) == REQUEST
    with pytest.raises(BadToken, match="older than"):
        verify(SECRET, sign(SECRET, REQUEST, day=today - LIFETIME_DAYS - 1))
    with pytest.raises(BadToken, match="older than 7 days"):  # [policy] unsubscribe_lifetime
        verify(SECRET, sign(SECRET, REQUEST, day=today - 8), lifetime_days=7)


def test_tokens_without_a_day_are_still_honoured() -> None:
    payload = json.dumps({"t": "acme", "r": REQUEST.recipient, "m": REQUEST.message_id},
                         separators=(",", ":")).encode()  # fmt: skip
    mac = hmac.new(SECRET, payload, hashlib.sha256).digest()
    token = ".".join(base64.urlsafe_b64encode(raw).decode().rstrip("=") for raw in (payload, mac))
    assert verify(SECRET, token) == REQUEST


def _unsub(recipients: list[str]) -> tuple[Outcome, str, bool]:
    relay_mode = BULK_TENANT.model_copy(update={"unsubscribe": "relay"})
    ctx = PolicyContext(relay_mode, "news@acme.example", recipients,
                        newsletter(unsubscribe=None, post=None))  # fmt: skip
    verdicts = asyncio.run(Pipeline().run("data", ctx, stop_at_refusal=False))
    verdict = next(v for v in verdicts if v.rule == "P-UNSUB")
    return verdict.outcome, verdict.reason, ctx.add_unsubscribe


def test_relay_mode_adds_only_for_one_recipient() -> None:
    assert _unsub(["alice@inbox.example"]) == (
        Outcome.PASS,
        "the relay adds its signed one-click List-Unsubscribe",
        True,
    )
    outcome, reason, adds = _unsub(["a@inbox.example", "b@inbox.example"])
    assert outcome is Outcome.REJECT and "one recipient per message" in reason and not adds


@pytest.mark.e2e
def test_relay_adds_a_signed_uri_that_dkim_covers(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_UNSUBSCRIBE_SECRET", SECRET.decode())
    relay_config.overrides = {
        "tenants": Amend(acme={"unsubscribe": "relay", "require_consent": False}),
        "policy": {"unsubscribe_url": "https://relay.test/u"},
    }
    with running(relay_config, tmp_path) as relay:
        raw = newsletter(unsubscribe=None, post=None).replace(
            b"To: alice@inbox.example", b"To: alice@inbox.example\r\nList-Id: <news.acme.example>"
        )
        with submission(relay.config.submission_port) as client:
            client.sendmail("news@acme.example", ["alice@inbox.example"], raw)
        ((_, _, content),) = sink.wait_count(1)
    delivered = email.message_from_bytes(content, policy=email.policy.default)
    assert delivered["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<https://relay\.test/u/(\S+)>", str(delivered["List-Unsubscribe"]))
    assert url is not None
    token = verify(SECRET, url.group(1))
    assert (token.tenant, token.recipient) == ("acme", "alice@inbox.example")
    assert token.message_id == str(delivered["Message-ID"])
