"""End to end: what comes back after delivery ends in the suppression list.

The sink plays a mailbox provider: it refuses one recipient at RCPT (550 5.1.1), accepts
the others; then, like a provider, it sends an asynchronous DSN (RFC 3464) to the return
path of one delivered message and an ARF complaint (RFC 5965) about another to the relay's
feedback listener. All three recipients end up suppressed with the right reason, and the
next message to each is refused at RCPT with [P-SUPPRESS].
"""

import email
import email.policy
import hashlib
import hmac
import json
import smtplib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.dkim.keys import dns_record
from relay.feedback.reports import verp
from tests.support.dkim import txt_record
from tests.support.dns_server import DnsServer
from tests.support.feedback import SECRET, arf_report, dsn_report, send_report
from tests.support.peers import (
    ROOT,
    Amend,
    Append,
    RelayConfig,
    RelayProcess,
    Sink,
    db_rows,
    free_port,
    running,
    wait_for,
)
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e

GONE, LATER, MOAN, KEEP = (f"{n}@inbox.example" for n in ("gone", "later", "moan", "keep"))


@pytest.fixture
def feedback_relay(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> Iterator[tuple[RelayProcess, int]]:
    """A relay whose tenant acme has a return-path domain, with a feedback listener."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    port = free_port()
    relay_config.overrides = {
        "policy": {"unsubscribe_secret_file": str(secret_file)},
        "tenants": Amend(acme={"return_path_domain": "bounce.acme.example"}),
        "listeners": Append(
            {"name": "feedback", "address": f"127.0.0.1:{port}", "role": "feedback"}
        ),
        "feedback": {
            "fbl_addresses": ["fbl@relay.test"],
            "abuse_address": "abuse@relay.test",
            "process_every": 0.2,
            "providers": [{"name": "loopback", "networks": ["127.0.0.0/8"]}],
        },
    }
    with running(relay_config, tmp_path) as relay:
        yield relay, port


def _suppressions(relay: RelayProcess) -> dict[str, str]:
    rows = db_rows(relay.config.dsn, "SELECT address, reason FROM suppressions")
    return {r["address"]: r["reason"] for r in rows}


def test_bounces_and_complaints_suppress(
    feedback_relay: tuple[RelayProcess, int], sink: Sink
) -> None:
    relay, port = feedback_relay
    sink.handler.rcpt_replies[GONE] = (
        "550 5.1.1 The email account that you tried to reach does not exist."
    )
    with submission(relay.config.submission_port) as client:
        client.sendmail(
            "app@acme.example",
            [GONE, LATER, MOAN, KEEP],
            message().as_bytes(policy=email.policy.SMTP),
        )
    delivered = {rcpts[0]: (mail_from, content) for mail_from, rcpts, content in sink.wait_count(3)}
    assert sorted(delivered) == [KEEP, LATER, MOAN]
    for mail_from, _ in delivered.values():  # VERP: one envelope per recipient, signed
        assert mail_from.startswith("b-") and mail_from.endswith("@bounce.acme.example")
    assert len({mail_from for mail_from, _ in delivered.values()}) == 3
    wait_for(lambda: _suppressions(relay).get(GONE) == "hard-bounce", 15, "synchronous bounce")

    later_path, later_content = delivered[LATER]
    assert send_report(port, "", later_path, dsn_report(later_path, LATER, later_content))[0] == 250
    moan_path, moan_content = delivered[MOAN]
    code, _ = send_report(port, "fbl@inbox.example", "fbl@relay.test",
                           arf_report(moan_path, MOAN, moan_content))  # fmt: skip
    assert code == 250
    wait_for(lambda: len(_suppressions(relay)) == 3, 15, "three suppressions")
    assert _suppressions(relay) == {GONE: "hard-bounce", LATER: "hard-bounce", MOAN: "complaint"}

    with submission(relay.config.submission_port) as client:
        client.mail("app@acme.example")
        for address in (GONE, LATER, MOAN):
            code, reply = client.rcpt(address)
            assert code == 550 and reply.startswith(b"5.7.1 [P-SUPPRESS] <" + address.encode())
        assert client.rcpt(KEEP)[0] == 250

    kinds = [(r["kind"], r["recipient"]) for r in db_rows(
        relay.config.dsn, "SELECT kind, recipient FROM events ORDER BY id")]  # fmt: skip
    for expected in [("delivered", KEEP), ("bounced", GONE), ("bounced", LATER),
                     ("complained", MOAN), ("suppressed", MOAN)]:  # fmt: skip
        assert expected in kinds, kinds
    (rates,) = db_rows(
        relay.config.dsn,
        "SELECT sum(delivered) AS d, sum(hard_bounced) AS b, sum(complained) AS c FROM rates",
    )
    assert (rates["d"], rates["b"], rates["c"]) == (3, 2, 1)
    metrics = urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()
    assert 'relay_feedback_reports_total{channel="fbl",kind="complaint",state="processed"} 1.0' in (
        metrics
    )


def test_feedback_listener_is_no_relay_and_keeps_what_it_cannot_read(
    feedback_relay: tuple[RelayProcess, int],
) -> None:
    relay, port = feedback_relay
    code, reply = send_report(port, "spammer@example.net", "victim@elsewhere.example", b"x")
    assert code == 550 and reply.startswith(b"5.7.1 Relaying denied")
    code, reply = send_report(port, "", "b-forged@bounce.acme.example", b"x")
    assert code == 550 and reply.startswith(b"5.1.1")
    garbage = b"Subject: feedback-report\r\nContent-Type: multipart/report\r\n\r\n\xff\xfe--"
    assert send_report(port, "", "fbl@relay.test", garbage)[0] == 250
    wait_for(
        lambda: bool(db_rows(relay.config.dsn,
                             "SELECT 1 FROM feedback_reports WHERE state = 'malformed'")),
        15, "the malformed report processed",
    )  # fmt: skip
    (row,) = db_rows(relay.config.dsn, "SELECT raw, problem FROM feedback_reports")
    assert bytes(row["raw"]).startswith(b"Subject: feedback-report") and row["problem"]
    assert "Traceback" not in relay.log()


def test_an_old_return_path_is_refused_like_a_forged_one(
    feedback_relay: tuple[RelayProcess, int],
) -> None:
    """A VERP address names its delivery for `[feedback] return_path_lifetime` (30 days)."""
    _, port = feedback_relay
    today = int(time.time() // 86400)
    for age, expected in ((0, 250), (30, 250), (31, 550)):
        path = verp.address(SECRET.encode(), 1, "bounce.acme.example", day=today - age)
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.ehlo("mx.inbox.example")
            client.mail("")
            code, reply = client.rcpt(path)
            assert code == expected, (age, code, reply)


def test_forwarded_abuse_report_suppresses_the_reporter(
    feedback_relay: tuple[RelayProcess, int], sink: Sink
) -> None:
    """P-ABUSE-DESK: a recipient forwards the mail (as an attachment) to the abuse address;
    the relay finds it by its trace headers, suppresses the reporter and keeps the report."""
    relay, port = feedback_relay
    with submission(relay.config.submission_port) as client:
        client.sendmail(
            "app@acme.example", [KEEP], message(to=KEEP).as_bytes(policy=email.policy.SMTP)
        )
    ((_, _, content),) = sink.wait_count(1)
    forward = EmailMessage()
    forward["From"] = f"Keep <{KEEP}>"
    forward["To"] = "abuse@relay.test"
    forward["Subject"] = "Fwd: spam from your customer"
    forward.set_content("I never signed up for this. The message is attached.\n")
    forward.add_attachment(email.message_from_bytes(content, policy=email.policy.SMTP))
    raw = forward.as_bytes(policy=email.policy.SMTP)
    assert send_report(port, KEEP, "abuse@relay.test", raw)[0] == 250
    wait_for(lambda: _suppressions(relay).get(KEEP) == "abuse-report", 15, "abuse report")
    listing = subprocess.run(
        [sys.executable, "-m", "relay", "abuse", "ls", "--config", str(relay.path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "processed" in listing and "acme" in listing and KEEP in listing
    (rates,) = db_rows(relay.config.dsn, "SELECT sum(complained) AS c FROM rates")
    assert rates["c"] == 1


class _Receiver:
    """A tenant's webhook endpoint on loopback: answers 500 to the first POST, then 200,
    and keeps what it was sent (the raw body and the signature headers)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(
                    (self.headers["X-Relay-Timestamp"], self.headers["X-Relay-Signature"], body)
                )
                self.send_response(500 if len(receiver.posts) == 1 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_webhook_gets_signed_events_again_after_a_500(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """Events are POSTed to the tenant's webhook signed with HMAC-SHA256; the receiver
    checks the signature; after it answered 500 the same events come again."""
    receiver = _Receiver()
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text("webhook-secret-of-acme-0123456789")
    relay_config.overrides = {
        "tenants": Amend(
            acme={
                "webhook_url": receiver.url,
                "webhook_secret_file": str(secret_file),
                "webhook_private": True,
            }
        )
    }
    with running(relay_config, tmp_path) as relay:
        with submission(relay.config.submission_port) as client:
            client.sendmail("app@acme.example", [KEEP], message(to=KEEP).as_bytes(policy=SMTP))
        sink.wait_count(1)
        wait_for(lambda: len(receiver.posts) >= 2, 30, "the webhook retried")
    receiver.server.shutdown()
    receiver.server.server_close()
    for timestamp, signature, body in receiver.posts[:2]:
        expected = hmac.new(
            b"webhook-secret-of-acme-0123456789", f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(signature, f"sha256={expected}")
    first, second = (json.loads(body) for _, _, body in receiver.posts[:2])
    assert first == second and first["tenant"] == "acme"
    assert [(e["kind"], e["recipient"]) for e in first["events"]] == [("delivered", KEEP)]


def test_abuse_form_report_suppresses_the_reporter(
    feedback_relay: tuple[RelayProcess, int], sink: Sink
) -> None:
    """P-ABUSE-DESK over HTTP: a reporter pastes the headers of the mail into the form."""
    relay, _ = feedback_relay
    with submission(relay.config.submission_port) as client:
        client.sendmail("app@acme.example", [LATER], message(to=LATER).as_bytes(policy=SMTP))
    ((_, _, content),) = sink.wait_count(1)
    page = urllib.request.urlopen(relay.url("/abuse"), timeout=5).read().decode()
    assert '<form method="post" action="/abuse">' in page
    pasted = content.split(b"\r\n\r\n", 1)[0].decode()
    assert _post_report(relay, LATER, pasted, _form_token(page))[0] == 200
    wait_for(lambda: _suppressions(relay).get(LATER) == "abuse-report", 15, "form report")
    (row,) = db_rows(relay.config.dsn, "SELECT channel, state, tenant FROM feedback_reports")
    assert (row["channel"], row["state"], row["tenant"]) == ("abuse-form", "processed", "acme")


PROVIDER_DOMAIN = "fbl.inbox.example"


@pytest.fixture
def vouched_relay(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> Iterator[tuple[RelayProcess, int, bytes]]:
    """A relay whose one feedback provider signs its reports with DKIM (d=fbl.inbox.example,
    its key published by a DNS server on loopback) and sends from 192.0.2.0/24: reports
    from loopback count only when that signature verifies. Yields the relay, its feedback
    port and the provider's private key (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    record = txt_record(dns_record(key))  # type: ignore[arg-type]
    dns = DnsServer({f"fbl._domainkey.{PROVIDER_DOMAIN}": [("TXT", 300, record)]})
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    port = free_port()
    relay_config.overrides = {
        "policy": {"unsubscribe_secret_file": str(secret_file)},
        "delivery": {"nameservers": [f"127.0.0.1:{dns.port}"]},
        "tenants": Amend(acme={"return_path_domain": "bounce.acme.example"}),
        "listeners": Append(
            {"name": "feedback", "address": f"127.0.0.1:{port}", "role": "feedback"}
        ),
        "feedback": {
            "fbl_addresses": ["fbl@relay.test"],
            "process_every": 0.2,
            "providers": [
                {"name": "inbox", "networks": ["192.0.2.0/24"], "dkim_domains": [PROVIDER_DOMAIN]}
            ],
        },
    }
    try:
        with running(relay_config, tmp_path) as relay:
            yield relay, port, pem
    finally:
        dns.stop()


def _signed(raw: bytes, pem: bytes) -> bytes:
    signature = dkim.sign(
        raw, b"fbl", PROVIDER_DOMAIN.encode(), pem, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + raw


def _report_states(relay: RelayProcess) -> list[str]:
    return [
        r["state"]
        for r in db_rows(relay.config.dsn, "SELECT state FROM feedback_reports ORDER BY id")
    ]


def _rates(relay: RelayProcess) -> tuple[int, int]:
    (row,) = db_rows(
        relay.config.dsn,
        "SELECT coalesce(sum(complained), 0) AS c, coalesce(sum(hard_bounced), 0) AS b FROM rates",
    )
    return int(row["c"]), int(row["b"])


def test_forged_and_replayed_reports_change_nothing(
    vouched_relay: tuple[RelayProcess, int, bytes], sink: Sink
) -> None:
    """A complaint that no provider vouches for is kept as unverified and counts nothing; the
    provider's signed report counts once, and its replays, like a DSN's, count nothing."""
    relay, port, pem = vouched_relay
    with submission(relay.config.submission_port) as client:
        client.sendmail(
            "app@acme.example", [LATER, MOAN], message().as_bytes(policy=email.policy.SMTP)
        )
    delivered = {rcpts[0]: (mail_from, content) for mail_from, rcpts, content in sink.wait_count(2)}
    moan_path, moan_content = delivered[MOAN]
    complaint = arf_report(moan_path, MOAN, moan_content)

    for _ in range(5):  # anyone can write an ARF report naming a delivered message
        assert send_report(port, "fbl@inbox.example", "fbl@relay.test", complaint)[0] == 250
    wait_for(lambda: _report_states(relay) == ["unverified"] * 5, 15, "five unverified reports")
    assert _rates(relay) == (0, 0) and MOAN not in _suppressions(relay)

    signed = _signed(complaint, pem)
    for _ in range(3):
        assert send_report(port, "fbl@inbox.example", "fbl@relay.test", signed)[0] == 250
    wait_for(lambda: len(_report_states(relay)) == 8 and "new" not in _report_states(relay),
             15, "the signed reports")  # fmt: skip
    assert _report_states(relay)[5:] == ["processed", "duplicate", "duplicate"]
    assert _suppressions(relay).get(MOAN) == "complaint" and _rates(relay) == (1, 0)

    later_path, later_content = delivered[LATER]
    bounce = dsn_report(later_path, LATER, later_content)
    for _ in range(3):
        assert send_report(port, "", later_path, bounce)[0] == 250
    wait_for(lambda: len(_report_states(relay)) == 11 and "new" not in _report_states(relay),
             15, "the bounces")  # fmt: skip
    assert _report_states(relay)[8:] == ["processed", "duplicate", "duplicate"]
    assert _rates(relay) == (1, 1)


def _form_token(page: str) -> str:
    return page.split('name="token" value="', 1)[1].split('"', 1)[0]


def _post_report(relay: RelayProcess, reporter: str, pasted: str, token: str) -> tuple[int, str]:
    form = urllib.parse.urlencode({"email": reporter, "message": pasted, "token": token})
    try:
        with urllib.request.urlopen(relay.url("/abuse"), data=form.encode(), timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_abuse_form_cannot_be_turned_against_recipients(
    feedback_relay: tuple[RelayProcess, int], sink: Sink
) -> None:
    """A POST without the page's token (another site's form) is refused 403; a report that
    names someone the message was not sent to suppresses only the message's recipient; the
    sixth report within ten minutes from one client gets 429."""
    relay, _ = feedback_relay
    with submission(relay.config.submission_port) as client:
        client.sendmail("app@acme.example", [LATER], message(to=LATER).as_bytes(policy=SMTP))
    ((_, _, content),) = sink.wait_count(1)
    pasted = content.split(b"\r\n\r\n", 1)[0].decode()
    stranger = "customer-of-acme@inbox.example"
    assert _post_report(relay, stranger, pasted, "")[0] == 403
    assert _post_report(relay, stranger, pasted, "1.forged")[0] == 403
    token = _form_token(urllib.request.urlopen(relay.url("/abuse"), timeout=5).read().decode())
    assert _post_report(relay, stranger, pasted, token)[0] == 200
    wait_for(lambda: LATER in _suppressions(relay), 15, "the report processed")
    assert stranger not in _suppressions(relay)
    statuses = [_post_report(relay, stranger, "Message-ID: <x@y>", token)[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
