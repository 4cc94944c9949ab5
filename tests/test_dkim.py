"""DKIM signatures checked by dkimpy's verifier against a real DNS server on loopback."""

import hashlib
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from email.policy import SMTP
from pathlib import Path

import dkim
import pytest
import tomli_w
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.dkim import sign as dkim_sign
from relay.dkim.keys import DomainKeys, dns_record, generate, load_signing_keys
from relay.dkim.sign import SigningKey, relaxed_body, relaxed_body_hash, sign
from tests.support.dkim import (
    DOMAIN,
    SIGNING_CASES,
    dkimpy_dnsfunc,
    receipt,
    txt_record,
    verify_all,
)
from tests.support.dns_server import DnsServer
from tests.support.peers import ROOT, demo_document, merged


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    return [
        SigningKey(DOMAIN, "rsa1", generate("rsa")),
        SigningKey(DOMAIN, "ed1", generate("ed25519")),
    ]


@pytest.fixture(scope="module")
def dns_server(keys: list[SigningKey]) -> Iterator[DnsServer]:
    records = {
        f"{k.selector}._domainkey.{DOMAIN}": [("TXT", 300, txt_record(dns_record(k.key)))]
        for k in keys
    }
    server = DnsServer(records)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dnsfunc(dns_server: DnsServer) -> Callable[..., bytes | None]:
    return dkimpy_dnsfunc(dns_server.port)


@pytest.mark.parametrize("case", SIGNING_CASES)
def test_signatures_verify(
    case: str, keys: list[SigningKey], dnsfunc: Callable[..., bytes | None]
) -> None:
    """RFC 6376 and RFC 8463: both the RSA-2048 and the Ed25519 signature verify."""
    signed = sign(SIGNING_CASES[case], keys, expire_after=86400)
    assert verify_all(signed, dnsfunc) == [True, True]
    assert b"\r\n" in signed and b"\n" not in signed.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Your receipt", b"Your reciept"), id="one header"),
        pytest.param(lambda m: m[:-3] + b"X" + m[-2:], id="one body byte"),
        pytest.param(lambda m: m + b"appended\r\n", id="appended body line"),
        pytest.param(
            lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: ceo@acme.example\r\n\r\n", 1),
            id="second From added",
        ),
        pytest.param(
            lambda m: m.replace(b"\r\n\r\n", b"\r\nCc: evil@x.example\r\n\r\n", 1),
            id="absent Cc added",
        ),
    ],
)
def test_altered_message_fails(
    tamper: Callable[[bytes], bytes], keys: list[SigningKey], dnsfunc: Callable[..., bytes | None]
) -> None:
    """Any change after signing, including an added From or Cc (over-signing), breaks it."""
    signed = sign(receipt().as_bytes(policy=SMTP), keys)
    assert verify_all(signed, dnsfunc) == [True, True]
    assert verify_all(tamper(signed), dnsfunc) == [False, False]


def test_relaxed_body_matches_dkimpy() -> None:
    """Our faster relaxed body canonicalisation (RFC 6376 3.4.4) gives dkimpy's bytes."""
    rng = random.Random(6376)
    pieces = [b"a", b" ", b"\t", b"\r\n", b"xyz", b"  \r\n", b"\r\n\r\n", b" \t", b"\t\r\n"]
    reference = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    for _ in range(20_000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert relaxed_body(body) == reference.canonicalize_body(body), body


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"xy", b"  \r\n", b"\t\r\n"]),
                  max_size=60).map(b"".join),
    chunk=st.integers(min_value=1, max_value=12),
)  # fmt: skip
def test_the_body_hash_in_pieces_is_the_hash_of_the_whole(body: bytes, chunk: int) -> None:
    """Canonicalising 1 MiB at a time (here a few bytes) hashes the same bytes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dkim_sign, "_CHUNK", chunk)
        assert relaxed_body_hash(body) == hashlib.sha256(relaxed_body(body)).digest()


def test_signature_tags(keys: list[SigningKey]) -> None:
    """relaxed/relaxed, t= and x=, no l=; the named headers are over-signed (N+1)."""
    signed = sign(receipt().as_bytes(policy=SMTP), keys[:1], expire_after=3600, now=1_800_000_000)
    header = dkim.DKIM(signed).headers[0][1]
    tags = dict(
        (k.strip(), v.strip())
        for k, _, v in (t.partition(b"=") for t in b"".join(header.split()).split(b";"))
    )
    assert tags[b"c"] == b"relaxed/relaxed" and tags[b"a"] == b"rsa-sha256"
    assert tags[b"t"] == b"1800000000" and tags[b"x"] == b"1800003600"
    assert b"l" not in tags
    signed_names = tags[b"h"].split(b":")
    for name in (b"from", b"to", b"subject", b"date", b"message-id"):
        assert signed_names.count(name) == 2  # one present + one to lock it
    for name in (b"cc", b"reply-to", b"list-unsubscribe", b"list-unsubscribe-post"):
        assert signed_names.count(name) == 1  # absent: signed empty so it cannot be added


def test_keygen_files_and_records(tmp_path: Path) -> None:
    """Keys are written with mode 0600; the records follow RFC 6376 3.6.1 and RFC 8463 4."""
    domain = DomainKeys(tmp_path, DOMAIN)
    selector, key = domain.add_next("ed25519")
    assert (domain.key_path(selector).stat().st_mode & 0o777) == 0o600
    assert dns_record(key).startswith("v=DKIM1; k=ed25519; p=")
    assert len(dns_record(generate("rsa"))) > 380  # a 2048-bit SubjectPublicKeyInfo
    assert load_signing_keys(tmp_path) == {}  # a next key does not sign


def test_rotate_promotes_only_a_published_key(tmp_path: Path) -> None:
    """`relay dkim rotate` refuses until DNS has the record, then promotes next to active
    and retires the previous key."""
    dns = DnsServer({})
    config = tmp_path / "relay.toml"
    document = merged(
        demo_document(),
        {
            "relay": {"data_dir": str(tmp_path / "data")},
            "delivery": {"nameservers": [f"127.0.0.1:{dns.port}"]},
        },
    )
    config.write_text(tomli_w.dumps(document))

    def relay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relay", "dkim", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    try:
        root = tmp_path / "data" / "dkim"
        for round_ in (1, 2):
            made = relay("keygen", "demo.example", "--selector", f"s{round_}")
            assert made.returncode == 0, made.stderr
            refused = relay("rotate", "demo.example")
            assert refused.returncode == 1 and f"s{round_} is not published" in refused.stderr
            key = DomainKeys(root, "demo.example").load_key(f"s{round_}")
            dns.add(f"s{round_}._domainkey.demo.example", "TXT", 300, txt_record(dns_record(key)))
            rotated = relay("rotate", "demo.example")
            assert rotated.returncode == 0, rotated.stderr
            assert f"s{round_} now signs" in rotated.stdout
        assert "s1 retired" in rotated.stdout
        active = load_signing_keys(root)["demo.example"]
        assert [k.selector for k in active] == ["s2"]
    finally:
        dns.stop()


@pytest.mark.parametrize("selector", ["../../x", "a/b", "-bad", "a..b", "x" * 64])
def test_a_selector_that_is_no_dns_label_is_refused(tmp_path: Path, selector: str) -> None:
    """RFC 6376 3.1: a selector is a sub-domain, so `../../x` can never name a file outside
    the domain's key folder."""
    keys = DomainKeys(tmp_path / "dkim", "acme.example")
    with pytest.raises(ValueError, match="is not a DKIM selector"):
        keys.add_next("rsa", selector)
    assert not any(tmp_path.rglob("*.pem"))


def test_key_and_state_files_are_private(tmp_path: Path) -> None:
    keys = DomainKeys(tmp_path / "dkim", "acme.example")
    selector, _ = keys.add_next("rsa", "s1")
    for path in (keys.key_path(selector), keys.directory / "state.json", keys.directory):
        assert path.stat().st_mode & 0o077 == 0, path
