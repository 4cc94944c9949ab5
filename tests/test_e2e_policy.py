"""End to end: a policy refusal is a 5xx citing its P-rule, and nothing is queued."""

import base64
import json
import smtplib
import time
import urllib.error
import urllib.request
from email.policy import SMTP
from pathlib import Path

import pytest

from tests.support.messages import FOOTER_HTML, FOOTER_TEXT, newsletter
from tests.support.peers import Amend, RelayProcess, Sink, cli, db_count, wait_for
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e


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
    assert db_count(relay.config.dsn, "messages") == 0 and sink.messages == []
    metrics = urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()
    rule = reply.split(b"[")[1].split(b"]")[0].decode()
    assert f'relay_policy_verdicts_total{{rule="{rule}",verdict="reject"}} 1.0' in metrics


def _without(line: str) -> dict[str, str]:
    """Newsletter footers with one line of each taken out."""
    html = "".join(p for p in FOOTER_HTML.split("</p>") if line not in p and p) + "</p>"
    text = "\n".join(t for t in FOOTER_TEXT.splitlines() if line not in t)
    return {"html": html, "text": text}


BULK_REFUSALS = {
    "P-UNSUB": (dict(unsubscribe=None), b"5.7.1 [P-UNSUB] bulk mail needs List-Unsubscribe"),
    "P-IDENTITY": (_without("Berlin"), b"5.7.1 [P-IDENTITY] "),
    "P-CONSENT-NOTE": (_without("You receive this"), b"5.7.1 [P-CONSENT-NOTE] "),
    "P-NO-SERVICE-CONTACT": (
        {"html": FOOTER_HTML + "<p>Questions? abuse@relay.test</p>"},
        b"5.7.1 [P-NO-SERVICE-CONTACT] ",
    ),
    "P-CONTENT": (
        {
            "html": FOOTER_HTML + "<p>Buy cheap viagra and oxycodone online, no prescription "
            "needed, discreet shipping from our online pharmacy.</p>"
        },
        b"5.7.1 [P-CONTENT] ",
    ),
}


@pytest.mark.parametrize("rule", BULK_REFUSALS)
def test_bulk_refusals_cite_the_rule(relay: RelayProcess, sink: Sink, rule: str) -> None:
    """The bulk rules over SMTP: a newsletter that breaks one of them is refused at DATA
    with the rule's ID, nothing is queued, and the refusal is counted."""
    change, reply = BULK_REFUSALS[rule]
    raw = newsletter(**change)  # type: ignore[arg-type]
    raw = raw.replace(b"To: alice@inbox.example", b"List-Id: <news.acme.example>")
    with submission(relay.config.submission_port) as client:
        client.mail("news@acme.example")
        assert client.rcpt("alice@inbox.example")[0] == 250
        code, text = client.data(raw)
    assert code == 550 and text.startswith(reply), text
    _nothing_queued_and_counted(relay, sink, rule)


def test_unverified_tenant_sends_no_bulk(relay: RelayProcess, sink: Sink) -> None:
    """P-AUTH: a tenant whose identity is not verified (printer) may send a receipt, but a
    message that is bulk by its headers is refused."""
    raw = newsletter().replace(b"news@acme.example", b"news@printer.example")
    raw = raw.replace(b"To: alice@inbox.example", b"Precedence: bulk")
    with submission(relay.config.submission_port, login=False, source="127.0.0.2") as client:
        client.mail("news@printer.example")
        assert client.rcpt("alice@inbox.example")[0] == 250
        code, text = client.data(raw)
    assert code == 550 and text.startswith(b"5.7.1 [P-AUTH] "), text
    _nothing_queued_and_counted(relay, sink, "P-AUTH")


def test_overlong_line_is_refused(relay: RelayProcess, sink: Sink) -> None:
    """P-SIZE: a line over 998 octets (RFC 5321 4.5.3.1.6) is refused, not folded."""
    msg = message()
    msg.set_content("x" * 1200 + "\n", cte="8bit")
    with submission(relay.config.submission_port) as client:
        client.mail("app@acme.example")
        client.rcpt("alice@inbox.example")
        code, text = client.data(msg.as_bytes(policy=SMTP))
    assert code == 550 and text.startswith(b"5.6.0 [P-SIZE] line "), text
    _nothing_queued_and_counted(relay, sink, "P-SIZE")


def _nothing_queued_and_counted(relay: RelayProcess, sink: Sink, rule: str) -> None:
    assert db_count(relay.config.dsn, "messages") == 0 and sink.messages == []
    metrics = urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()
    assert f'relay_policy_verdicts_total{{rule="{rule}",verdict="reject"}} 1.0' in metrics


def test_suspended_tenant_is_refused_and_its_queue_held(relay: RelayProcess, sink: Sink) -> None:
    """P-SUSPEND: new mail gets 550 naming the reason; queued mail is held, not lost, and
    goes out once an admin lifts the suspension (reload)."""
    sink.handler.script = ["451 4.7.0 try later"]  # keep the first message queued
    with submission(relay.config.submission_port) as client:
        client.send_message(message(subject="queued before"))
    wait_for(lambda: db_count(relay.config.dsn, "attempts") >= 1, 15, "first attempt")
    relay.config.overrides = {"tenants": Amend(acme={"suspended": "complaint rate over 0.3%"})}
    relay.write_config()
    relay.signal(1)
    wait_for(lambda: "configuration reloaded" in relay.log(), 10, "reload")
    with submission(relay.config.submission_port) as client:
        code, reply = client.docmd("MAIL", "FROM:<app@acme.example>")
    assert (code, reply) == (
        550,
        b"5.7.1 [P-SUSPEND] tenant acme is suspended: complaint rate over 0.3%",
    )
    time.sleep(3)  # retries are due after 1-2 s: a held message must not go out
    assert sink.messages == [] and db_count(relay.config.dsn, "messages") == 1
    relay.config.overrides = {}
    relay.write_config()
    relay.signal(1)
    ((_, _, content),) = sink.wait_count(1, timeout=20)
    assert b"Subject: queued before" in content


def _metrics(relay: RelayProcess) -> str:
    return urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()


def test_suppressed_recipient_is_refused_at_rcpt(relay: RelayProcess, sink: Sink) -> None:
    """P-SUPPRESS: a suppressed address gets 550 5.7.1 at RCPT (case-insensitively), the
    other recipients of the message still go out; the list is managed with the CLI."""
    assert "added 1 of 1" in cli(
        relay, "suppression", "add", "Gone@Inbox.Example", "--tenant", "acme",
        "--reason", "unsubscribe",
    )  # fmt: skip
    wait_for(lambda: "relay_suppression_filter_entries 1.0" in _metrics(relay), 10, "filter")
    with submission(relay.config.submission_port) as client:
        client.mail("app@acme.example")
        code, reply = client.rcpt("gone@inbox.example")
        assert code == 550
        assert reply.decode().startswith(
            "5.7.1 [P-SUPPRESS] <gone@inbox.example> is on tenant acme's suppression list "
            "(unsubscribe since "
        )
        assert client.rcpt("alice@inbox.example")[0] == 250
        assert client.data(message().as_bytes(policy=SMTP))[0] == 250
    ((_, rcpts, _),) = sink.wait_count(1)
    assert rcpts == ["alice@inbox.example"]
    listing = cli(relay, "suppression", "ls", "--tenant", "acme")
    assert "gone@inbox.example" in listing and "unsubscribe" in listing and "cli" in listing
    # the relay's filter of the list answered for Alice; Gone, whom it holds, was looked up
    metrics = _metrics(relay)
    assert 'relay_suppression_lookups_total{by="filter"} 1.0' in metrics
    assert 'relay_suppression_lookups_total{by="database"} 1.0' in metrics


def test_suppression_import_and_export(relay: RelayProcess, tmp_path: Path) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,name\nbob@x.example,Bob\nnot an address,?\ncarol@y.example,C\n")
    out = cli(relay, "suppression", "import", str(csv_file), "--tenant", "acme")
    assert "imported 2 new" in out and "refused line 3: 'not an address'" in out
    exported = cli(relay, "suppression", "export", "--tenant", "acme").splitlines()
    assert exported[0] == "address,reason,source,created_at"
    assert [line.split(",")[:3] for line in exported[1:3]] == [
        ["bob@x.example", "manual", "import"],
        ["carol@y.example", "manual", "import"],
    ]


CONSENT_CSV = """address,consented_at,source,form_version,consent_text,method
Ann@Inbox.example,2026-03-01T10:00:00+01:00,203.0.113.7,signup-v3,"Yes, send news",double-opt-in
bob@inbox.example,2026-03-02 09:00,203.0.113.8,signup-v3,"Yes, send me news",web-form
carl@inbox.example,yesterday,203.0.113.9,signup-v3,"Yes",web-form
dan@inbox.example,2026-03-02T09:00:00Z,,signup-v3,"Yes",web-form
eve@inbox.example,2026-03-02T09:00:00Z,list-broker,v1,"-",purchased
"""


def _bulk(relay: RelayProcess, recipients: list[str]) -> tuple[int, bytes]:
    """A newsletter that meets every other bulk rule, so consent alone decides."""
    raw = newsletter().replace(b"To: alice@inbox.example", b"List-Id: <news.acme.example>")
    with submission(relay.config.submission_port) as client:
        client.mail("app@acme.example")
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        return client.data(raw)


def test_consent_records_import_show_and_enforce(
    relay: RelayProcess, sink: Sink, tmp_path: Path
) -> None:
    """P-CONSENT-RECORD: the CSV import refuses rows that prove nothing and says why; bulk
    mail to a recipient without a record is refused naming it; with records it goes out."""
    csv_file = tmp_path / "consent.csv"
    csv_file.write_text(CONSENT_CSV)
    out = cli(relay, "consent", "import", str(csv_file), "--tenant", "acme")
    assert "stored 2 consent records for acme, refused 3" in out
    assert "refused line 4: consented_at 'yesterday' is not ISO 8601" in out
    assert "refused line 5: empty source" in out
    assert "refused line 6: method 'purchased' is not one of" in out
    shown = cli(relay, "consent", "show", "ann@inbox.example", "--tenant", "acme")
    assert "double-opt-in" in shown and "203.0.113.7" in shown and "signup-v3" in shown
    assert "2026-03-01 09:00:00+00:00" in shown

    code, reply = _bulk(relay, ["ann@inbox.example", "zed@inbox.example"])
    assert code == 550 and reply.startswith(
        b"5.7.1 [P-CONSENT-RECORD] bulk mail without a consent record of <zed@inbox.example>"
    )
    assert _bulk(relay, ["ann@inbox.example", "Bob@inbox.example"])[0] == 250
    ((_, rcpts, _),) = sink.wait_count(1)
    assert sorted(rcpts) == ["Bob@inbox.example", "ann@inbox.example"]


def _api(
    relay: RelayProcess, path: str, body: object = None, password: str = "acme-secret"
) -> tuple[int, dict[str, object]]:
    """A request to the relay's HTTP API as tenant acme (HTTP Basic), and its JSON answer."""
    token = base64.b64encode(f"acme:{password}".encode()).decode()
    request = urllib.request.Request(
        relay.url(path),
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_consent_records_posted_over_http(relay: RelayProcess, sink: Sink) -> None:
    """P-CONSENT-RECORD over the HTTP API: records that prove consent are stored, the others
    refused with their reason; bulk mail then goes to the posted recipient only."""
    good = {"address": "Fay@Inbox.example", "consented_at": "2026-05-01T08:00:00Z",
            "source": "198.51.100.4", "form_version": "footer-v2",
            "consent_text": "Send me the monthly news", "method": "double-opt-in"}  # fmt: skip
    bad = dict(good, address="gil@inbox.example", method="purchased")
    status, answer = _api(relay, "/v1/consent", {"records": [good, bad]})
    assert status == 200 and answer["stored"] == 1, answer
    assert answer["refused"] == [{"index": 1, "address": "gil@inbox.example",
                                  "reason": "method 'purchased' is not one of web-form, "
                                  "double-opt-in, paper, verbal"}]  # fmt: skip
    status, record = _api(relay, "/v1/consent/fay@inbox.example")
    assert status == 200 and record["method"] == "double-opt-in"
    assert record["source"] == "198.51.100.4" and record["form_version"] == "footer-v2"
    assert _api(relay, "/v1/consent/gil@inbox.example")[0] == 404
    assert _api(relay, "/v1/consent", good, password="wrong")[0] == 401

    code, reply = _bulk(relay, ["gil@inbox.example"])
    assert code == 550 and b"[P-CONSENT-RECORD]" in reply
    assert _bulk(relay, ["fay@inbox.example"])[0] == 250
    ((_, rcpts, _),) = sink.wait_count(1)
    assert rcpts == ["fay@inbox.example"]
