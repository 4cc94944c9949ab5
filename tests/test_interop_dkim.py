"""Interop: our DKIM signatures checked by two independent implementations.

OpenDKIM (`opendkim-testmsg`, C, from opendkim-tools) checks RSA-2048 and Ed25519; Perl's
Mail::DKIM (libmail-dkim-perl; Debian 12's version predates Ed25519) checks RSA. Both ask
a real DNS server on loopback for the keys: Mail::DKIM is told its address, and OpenDKIM,
which only uses the system resolver, runs in a private mount and network namespace where
that server answers on 127.0.0.1:53 (tests/support/dns_namespace.py).
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.dkim.keys import dns_record, generate
from relay.dkim.sign import SigningKey, sign
from tests.support.dkim import SIGNING_CASES, txt_record
from tests.support.dns_server import DnsServer
from tests.support.peers import ROOT

pytestmark = pytest.mark.interop
DOMAIN = "acme.example"
RSA = SigningKey(DOMAIN, "rsa1", generate("rsa"))
ED25519 = SigningKey(DOMAIN, "ed1", generate("ed25519"))
RECORDS = {
    f"{k.selector}._domainkey.{DOMAIN}": [("TXT", 300, txt_record(dns_record(k.key)))]
    for k in (RSA, ED25519)
}


def _need(command: str, package: str) -> None:
    if shutil.which(command) is None:
        pytest.skip(f"{command} not found: install it with `apt-get install {package}`")


def _opendkim(message: bytes, records: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["unshare", "--mount", "--net", sys.executable, "-m", "tests.support.dns_namespace",
         str(records), "opendkim-testmsg"],
        input=message, capture_output=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def records_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need("opendkim-testmsg", "opendkim-tools")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("OpenDKIM's resolver needs a private namespace: run as root with unshare")
    path = tmp_path_factory.mktemp("dns") / "records.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    server = DnsServer(RECORDS)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("key", [RSA, ED25519], ids=["rsa-sha256", "ed25519-sha256"])
@pytest.mark.parametrize("case", SIGNING_CASES)
def test_opendkim_verifies(case: str, key: SigningKey, records_file: Path) -> None:
    signed = sign(SIGNING_CASES[case], [key])
    result = _opendkim(signed, records_file)
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("key", [RSA, ED25519], ids=["rsa-sha256", "ed25519-sha256"])
def test_opendkim_rejects_altered_messages(key: SigningKey, records_file: Path) -> None:
    signed = sign(SIGNING_CASES["utf-8 body"], [key])
    header = _opendkim(
        signed.replace(b"Subject: Your receipt", b"Subject: Your reciept"), records_file
    )
    body = _opendkim(signed[:-3] + b"X" + signed[-2:], records_file)
    assert header.returncode != 0 and b"signature" in header.stderr.lower()
    assert body.returncode != 0


def _mail_dkim(message: bytes, dns: DnsServer) -> list[str]:
    result = subprocess.run(
        ["perl", str(ROOT / "tests" / "interop" / "verify_mail_dkim.pl"), str(dns.port)],
        input=message, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.decode().split("\n")[:-1]


@pytest.mark.parametrize("case", SIGNING_CASES)
def test_mail_dkim_verifies_rsa(case: str, dns: DnsServer) -> None:
    _need("perl", "perl")
    if subprocess.run(["perl", "-MMail::DKIM", "-e1"], check=False).returncode != 0:
        pytest.skip("Mail::DKIM not found: install it with `apt-get install libmail-dkim-perl`")
    assert _mail_dkim(sign(SIGNING_CASES[case], [RSA]), dns) == ["rsa-sha256 pass"]


def test_mail_dkim_rejects_altered_messages(dns: DnsServer) -> None:
    if subprocess.run(["perl", "-MMail::DKIM", "-e1"], check=False).returncode != 0:
        pytest.skip("Mail::DKIM not found: install it with `apt-get install libmail-dkim-perl`")
    signed = sign(SIGNING_CASES["attachment"], [RSA])
    assert _mail_dkim(signed.replace(b"Subject:", b"Subject: FW:", 1), dns) == ["rsa-sha256 fail"]
    assert _mail_dkim(signed[:-3] + b"X" + signed[-2:], dns) == ["rsa-sha256 fail"]
