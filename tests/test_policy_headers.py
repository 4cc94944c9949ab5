"""P-HDR-FROM, P-HDR-ALIGN, P-HDR-SANE and P-SUBJECT, table-driven: accepted and refused."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config.schema import TenantSection
from relay.policy.context import PolicyContext
from relay.policy.pipeline import Pipeline, refusal
from relay.policy.verdict import Outcome
from tests.support.peers import ROOT

TENANT = TenantSection(name="acme", domains=["acme.example"], networks=["10.0.0.0/8"])
BULK_TENANT = TENANT.model_copy(update={"stream": "bulk", "verified": True})
GOOD_HEADERS = {
    "From": "Acme <news@acme.example>",
    "To": "alice@inbox.example",
    "Subject": "Your receipt",
    "Date": "Mon, 23 Nov 2026 22:00:00 +0000",
    "Message-ID": "<1@acme.example>",
}


def _message(headers: dict[str, str | list[str] | None], body: str = "Hello.\r\n") -> bytes:
    merged: dict[str, str | list[str] | None] = {**GOOD_HEADERS, **headers}
    lines = []
    for name, value in merged.items():
        for item in [value] if isinstance(value, str) else value or []:
            lines.append(f"{name}: {item}\r\n")
    return ("".join(lines) + "\r\n" + body).encode()


def _verdicts(raw: bytes, tenant: TenantSection = TENANT) -> dict[str, tuple[Outcome, str]]:
    ctx = PolicyContext(tenant, "app@acme.example", ["alice@inbox.example"], raw)
    verdicts = asyncio.run(Pipeline().run("data", ctx, stop_at_refusal=False))
    return {v.rule: (v.outcome, v.reason) for v in verdicts}


ACCEPTED = {
    "plain": {},
    "subdomain From": {"From": "news@mail.acme.example"},
    "IDNA U-label of an own domain": {"From": "news@ACME.example"},
    "Reply-To own domain": {"Reply-To": "support@acme.example"},
    "Sender own domain": {"Sender": "bounces@mail.acme.example"},
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted(case: str) -> None:
    verdicts = _verdicts(_message(ACCEPTED[case]))
    assert all(o in (Outcome.PASS, Outcome.SKIP) for o, _ in verdicts.values()), verdicts


REFUSED = {
    "no From": ({"From": None}, "P-HDR-FROM", "0 From headers"),
    "two From headers": (
        {"From": ["a@acme.example", "b@acme.example"]}, "P-HDR-SANE", "From appears 2 times",
    ),
    "two addresses in From": (
        {"From": "a@acme.example, b@acme.example"}, "P-HDR-FROM", "2 addresses",
    ),
    "foreign From": ({"From": "ceo@bank.example"}, "P-HDR-FROM", "bank.example is not a verified"),
    "look-alike From (Cyrillic a)": (
        {"From": "news@\u0430cme.example"}, "P-HDR-FROM", "xn--cme-5cd.example is not a verified",
    ),
    "suffix trick": ({"From": "news@evilacme.example"}, "P-HDR-FROM", "evilacme.example"),
    "foreign Reply-To": ({"Reply-To": "x@gmail.example"}, "P-HDR-ALIGN", "Reply-To domain"),
    "foreign Sender": ({"Sender": "x@other.example"}, "P-HDR-ALIGN", "Sender domain"),
    "no Date": ({"Date": None}, "P-HDR-SANE", "Date header is missing"),
    "bad Date": ({"Date": "yesterday"}, "P-HDR-SANE", "not a valid date"),
    "no Message-ID": ({"Message-ID": None}, "P-HDR-SANE", "Message-ID header is missing"),
    "bad Message-ID": ({"Message-ID": "12345"}, "P-HDR-SANE", "is malformed"),
    "two Subjects": ({"Subject": ["a", "b"]}, "P-HDR-SANE", "Subject appears 2 times"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_refused(case: str) -> None:
    headers, rule, reason = REFUSED[case]
    ctx = PolicyContext(TENANT, "app@acme.example", ["a@x.example"], _message(headers))
    verdict = refusal(asyncio.run(Pipeline().run("data", ctx)))
    assert verdict is not None and verdict.rule == rule, verdict
    assert reason in verdict.reason
    assert verdict.reply().startswith(f"550 5.7.1 [{rule}] ")


SUBJECTS = {
    "Your weekly news": None,
    "Re: your order": "'Re'",
    "RE: your order": "'RE'",
    "Fwd: a great offer": "'Fwd'",
    "AW: Angebot": "'AW'",
    "SV: Tilbud": "'SV'",
    "[Acme] Re: news": "'Re'",
    "回复\uff1a优惠": "'回复'",  # fullwidth colon
    "Regarding our offer": None,  # a word, not a prefix
    "": "non-empty Subject",
}


@pytest.mark.parametrize("subject", SUBJECTS)
def test_bulk_subject(subject: str) -> None:
    """P-SUBJECT: bulk mail must not fake a reply or forward, nor have an empty subject."""
    verdict = _verdicts(_message({"Subject": subject}), BULK_TENANT)["P-SUBJECT"]
    expected = SUBJECTS[subject]
    if expected is None:
        assert verdict[0] is Outcome.PASS
    else:
        assert verdict[0] is Outcome.REJECT and expected in verdict[1]


def test_reply_prefix_allowed_on_a_real_reply_and_on_transactional_mail() -> None:
    real_reply = _message({"Subject": "Re: your question", "In-Reply-To": "<q@x.example>"})
    assert _verdicts(real_reply, BULK_TENANT)["P-SUBJECT"][0] is Outcome.PASS
    transactional = _message({"Subject": "Re: your ticket"})
    assert _verdicts(transactional)["P-SUBJECT"][0] is Outcome.SKIP


def test_list_headers_make_mail_bulk() -> None:
    """POLICY.md: List-Id, Feedback-ID or Precedence: bulk|list make a message bulk."""
    verified = TENANT.model_copy(update={"verified": True})
    for header in ({"List-Id": "<news.acme.example>"}, {"Precedence": "bulk"}):
        verdicts = _verdicts(_message({"Subject": "Fwd: deal", **header}), verified)
        assert verdicts["P-SUBJECT"][0] is Outcome.REJECT


def test_rules_can_be_disabled_per_tenant() -> None:
    relaxed = BULK_TENANT.model_copy(update={"policy_skip": ["P-SUBJECT"]})
    assert _verdicts(_message({"Subject": "Re: deal"}), relaxed)["P-SUBJECT"][0] is Outcome.SKIP


def test_pipeline_order_is_cheap_first() -> None:
    assert Pipeline().order("mail") == ["mail:P-SUSPEND", "mail:P-HDR-ALIGN"]
    assert Pipeline().order("data") == [
        "data:P-AUTH",
        "data:P-SUSPEND",
        "data:P-COMPLAINT",
        "data:P-BOUNCE",
        "data:P-SIZE",
        "data:P-SIZE",
        "data:P-HDR-SANE",
        "data:P-HDR-FROM",
        "data:P-DNSAUTH",
        "data:P-DKIM",
        "data:P-WHOIS",
        "data:P-HDR-ALIGN",
        "data:P-SUBJECT",
        "data:P-UNSUB",
        "data:P-IDENTITY",
        "data:P-CONSENT-NOTE",
        "data:P-NO-SERVICE-CONTACT",
        "data:P-CONTENT",
        "data:P-CONSENT-RECORD",
    ]


def test_explain_prints_every_verdict(tmp_path: Path) -> None:
    """`relay policy explain` runs all checks offline and names the refusal."""
    eml = tmp_path / "news.eml"
    eml.write_bytes(
        _message({"From": "news@demo.example", "Subject": "Fwd: sale", "List-Id": "<l.demo>"})
    )
    result = subprocess.run(
        [sys.executable, "-m", "relay", "policy", "explain", str(eml), "--tenant", "demo",
         "--config", str(ROOT / "relay.toml")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pipeline order: mail:P-SUSPEND -> mail:P-HDR-ALIGN -> data:P-AUTH")
    assert any(line.split()[:2] == ["P-HDR-FROM", "pass"] for line in lines)
    assert any(line.split()[:2] == ["P-SUBJECT", "reject"] for line in lines)
    assert lines[-1].startswith("result: 550 5.7.1 [P-AUTH]")  # the demo tenant is unverified


def _mail_phase(tenant: TenantSection, mail_from: str) -> str | None:
    ctx = PolicyContext(tenant, mail_from)
    verdict = refusal(asyncio.run(Pipeline().run("mail", ctx)))
    return verdict.reply() if verdict else None


def test_mail_phase_standing_and_envelope_sender() -> None:
    """P-SUSPEND names the reason; P-HDR-ALIGN refuses a foreign or null envelope sender."""
    suspended = TENANT.model_copy(update={"suspended": "complaint rate 0.5% (ticket 42)"})
    assert _mail_phase(suspended, "app@acme.example") == (
        "550 5.7.1 [P-SUSPEND] tenant acme is suspended: complaint rate 0.5% (ticket 42)"
    )
    assert _mail_phase(TENANT, "app@mail.acme.example") is None
    assert _mail_phase(TENANT, "app@other.example") == (
        "553 5.7.1 [P-HDR-ALIGN] Sender domain other.example is not a sending domain of tenant acme"
    )
    assert (_mail_phase(TENANT, "") or "").startswith("553 5.7.1 [P-HDR-ALIGN] The null sender")


def test_unverified_tenant_sends_no_bulk() -> None:
    """P-AUTH: transactional mail passes, bulk mail from an unverified tenant does not."""
    assert _verdicts(_message({}))["P-AUTH"][0] is Outcome.PASS
    bulk = _message({"List-Id": "<news.acme.example>"})
    outcome, reason = _verdicts(bulk)["P-AUTH"]
    assert outcome is Outcome.REJECT and "not verified" in reason
    verified = TENANT.model_copy(update={"verified": True})
    assert _verdicts(bulk, verified)["P-AUTH"][0] is Outcome.PASS


def test_explain_the_sample_newsletter() -> None:
    """The shipped sample newsletter gets a verdict from every mail- and DATA-phase check,
    in the pipeline's order; only P-AUTH refuses it (the demo tenant is not verified)."""
    result = subprocess.run(
        [sys.executable, "-m", "relay", "policy", "explain", "examples/newsletter.eml",
         "--tenant", "demo", "--config", str(ROOT / "relay.toml")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    order = lines[0].removeprefix("pipeline order: ").split(" -> ")
    expected = [step.split(":")[1] for step in order if not step.startswith("rcpt:")]
    assert lines[2] == (
        "envelope sender: <news@demo.example> (the From address; another with --mail-from)"
    )
    verdicts = [line.split() for line in lines[3:-1]]
    assert [v[0] for v in verdicts] == expected
    assert [v[0] for v in verdicts if v[1] == "reject"] == ["P-AUTH"]
    assert (
        lines[-1]
        == "result: 550 5.7.1 [P-AUTH] tenant demo is not verified and may not send bulk mail"
    )


_SHAPES = {
    "plain": _message({}),
    "8-bit, no content type": "Subject: Grüße\r\n\r\nSchöne Grüße\x85\x0c\r\n".encode(),
    "quoted-printable latin-1": _message(
        {
            "Content-Type": "text/plain; charset=latin-1",
            "Content-Transfer-Encoding": "quoted-printable",
        },
        "Sch=F6ne Gr=FC=DFe=\r\n und mehr\r\n",
    ),
    "base64 html": _message(
        {"Content-Type": "text/html; charset=utf-8", "Content-Transfer-Encoding": "base64"},
        "PHA+SGVsbG8gPGEgaHJlZj0iaHR0cHM6Ly9hY21lLmV4YW1wbGUiPnRoZXJlPC9hPjwvcD4=\r\n",
    ),
    "broken base64": _message({"Content-Transfer-Encoding": "base64"}, "not base64 at all!\r\n"),
    "folded header": b"Subject: one\r\n two\r\nFrom: a@acme.example\r\n\r\nbody\r\n",
    "empty body": b"Subject: nothing\r\n\r\n",
    "multipart": _message(
        {"Content-Type": 'MultiPart/Alternative; boundary="b"'},
        "--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n"
        "<p>html</p>\r\n--b--\r\n",
    ),
    "rfc822 inside": _message(
        {"Content-Type": "message/rfc822"}, "Subject: inner\r\n\r\ninner body\r\n"
    ),
    "no blank line": b"Subject: only headers\r\nFrom: a@acme.example\r\n",
    "a line that is not a header": b"Subject: x\r\nnot a header\r\nFrom: y\r\n\r\nbody\r\n",
    "continuation first": b" leading\r\nSubject: x\r\n\r\nbody\r\n",
    "bare LF": b"Subject: x\n\nbody\nmore\n",
    "bare LF head, CRLF later": b"Subject: x\n\nbody\r\n\r\nmore\r\n",
}


@pytest.mark.parametrize("raw", _SHAPES.values(), ids=_SHAPES.keys())
def test_header_block_and_text_parts_are_the_standard_parsers(raw: bytes) -> None:
    """`parse_headers` gives the header fields the standard parser gives for the whole
    message, and `text_parts` the inline text parts of its walk."""
    from email.parser import BytesParser
    from email.policy import default

    from relay.policy.context import parse_headers
    from relay.policy.mime import text_parts
    from tests.support.messages import stdlib_text_parts

    theirs = BytesParser(policy=default).parsebytes(raw)
    if b"\r\n\r\n" in raw or b"\n\n" not in raw:  # the listener's wire form is CRLF
        assert list(parse_headers(raw).raw_items()) == list(theirs.raw_items())

    def same(text: str) -> str:  # 8-bit text labelled ASCII or nothing: read as UTF-8 here
        return "".join(c for c in text.replace("\r\n", "\n") if c.isascii())

    ours = [(p.subtype, same(p.text)) for p in text_parts(raw)]
    assert ours == [(kind, same(text)) for kind, text in stdlib_text_parts(raw)]
