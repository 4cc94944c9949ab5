"""End to end: the relay signs with the tenant domain's keys; the signature survives delivery."""

import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from relay.dkim.keys import DomainKeys, dns_record
from tests.support.dkim import dkimpy_dnsfunc, txt_record, verify_all
from tests.support.dns_server import DnsServer
from tests.support.peers import RelayConfig, Replace, Sink, run_cli, running
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e


def test_delivered_message_carries_valid_rsa_and_ed25519_signatures(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """P-DKIM: signed with the key of acme.example for From news@mail.acme.example (a
    subdomain, so DMARC's relaxed alignment holds); both signatures verify at the sink."""
    keys = DomainKeys(relay_config.data_dir / "dkim", "acme.example")
    records = {}
    for algorithm in ("rsa", "ed25519"):
        selector, key = keys.add_next(algorithm)  # type: ignore[arg-type]
        keys.promote(algorithm)  # type: ignore[arg-type]
        records[f"{selector}._domainkey.acme.example"] = [("TXT", 300, txt_record(dns_record(key)))]
    dns = DnsServer(records)  # type: ignore[arg-type]
    try:
        with running(relay_config, tmp_path) as relay:
            body = "Line one\n.starts with a dot\ntrailing space   \nGrüße\n"
            msg = message(sender="news@mail.acme.example", body=body)
            with submission(relay.config.submission_port) as client:
                client.send_message(msg)
            ((_, _, content),) = sink.wait_count(1)
        assert content.startswith(b"DKIM-Signature: v=1; a=")
        assert content.count(b"d=acme.example;") == 2
        assert verify_all(content, dkimpy_dnsfunc(dns.port)) == [True, True]
        tampered = content.replace(b"Subject: Receipt", b"Subject: Invoice")
        assert verify_all(tampered, dkimpy_dnsfunc(dns.port)) == [False, False]
    finally:
        dns.stop()


def test_mail_from_a_domain_without_an_active_key_is_refused(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """P-DKIM: every message leaves signed, so with no key for acme.example (and neither
    `[dkim] generate_missing` nor `allow_unsigned`) the message is refused at DATA with the
    rule's ID, nothing reaches the destination, and the admin commands name the domain."""
    relay_config.overrides = {"dkim": Replace({})}
    with running(relay_config, tmp_path) as relay:
        with submission(relay.config.submission_port) as client:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.send_message(message())
        assert refused.value.smtp_code == 550
        reply = refused.value.smtp_error.decode()
        assert reply.startswith("5.7.1 [P-DKIM] From domain acme.example of tenant acme has")
        checked = subprocess.run(
            [sys.executable, "-m", "relay", "check-config", str(relay.path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        status = run_cli(relay, "status")
    assert "acme: acme.example" in checked.stdout and "550 5.7.1 [P-DKIM]" in checked.stdout
    assert "no active key for acme: acme.example" in status.stdout
    assert sink.messages == []


def test_allow_unsigned_lets_mail_without_a_key_leave_unsigned(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """`[dkim] allow_unsigned = true` is the deployment's explicit choice to send unsigned."""
    relay_config.overrides = {"dkim": Replace({"allow_unsigned": True})}
    with running(relay_config, tmp_path) as relay:
        with submission(relay.config.submission_port) as client:
            client.send_message(message())
        ((_, _, content),) = sink.wait_count(1)
    assert b"DKIM-Signature:" not in content


def test_generate_missing_signs_the_first_message_with_a_key_made_at_start(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """The demo's `[dkim] generate_missing`: the relay makes and activates a key for each
    tenant domain without one, and the first message verifies against that key's record."""
    relay_config.overrides = {"dkim": Replace({"generate_missing": True})}
    with running(relay_config, tmp_path) as relay:
        with submission(relay.config.submission_port) as client:
            client.send_message(message())
        ((_, _, content),) = sink.wait_count(1)
    keys = DomainKeys(relay_config.data_dir / "dkim", "acme.example")
    selector = keys.state["rsa"].active
    assert selector is not None
    record = dns_record(keys.load_key(selector))
    records = {f"{selector}._domainkey.acme.example": [("TXT", 300, txt_record(record))]}
    dns = DnsServer(records)  # type: ignore[arg-type]
    try:
        assert verify_all(content, dkimpy_dnsfunc(dns.port)) == [True]
    finally:
        dns.stop()
