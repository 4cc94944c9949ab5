"""End to end: the relay signs with the tenant domain's keys; the signature survives delivery."""

from pathlib import Path

import pytest

from relay.dkim.keys import DomainKeys, dns_record
from tests.dns_server import DnsServer
from tests.peers import RelayConfig, Sink, running
from tests.smtp_client import message, submission
from tests.test_dkim import _txt, _verify_all, dkimpy_dnsfunc

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
        records[f"{selector}._domainkey.acme.example"] = [("TXT", 300, _txt(dns_record(key)))]
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
        assert _verify_all(content, dkimpy_dnsfunc(dns.port)) == [True, True]
        tampered = content.replace(b"Subject: Receipt", b"Subject: Invoice")
        assert _verify_all(tampered, dkimpy_dnsfunc(dns.port)) == [False, False]
    finally:
        dns.stop()
