"""Return-path (VERP) tokens: they name their delivery, resist forgery and expire."""

import base64
import hashlib
import hmac
import time

from relay.feedback.reports.verp import LIFETIME_DAYS, address, delivery_of

SECRET = b"v" * 32


def test_address_names_its_delivery_in_any_case() -> None:
    sender = address(SECRET, 4242, "bounces.acme.example")
    assert sender.startswith("b-") and sender.endswith("@bounces.acme.example")
    assert delivery_of(SECRET, sender) == 4242
    assert delivery_of(SECRET, sender.upper()) == 4242  # RFC 5321 2.4: receivers may fold case


def test_forged_or_foreign_tokens_are_refused() -> None:
    sender = address(SECRET, 4242, "bounces.acme.example")
    local, _, domain = sender.partition("@")
    flipped = local[:-1] + ("a" if local[-1] != "a" else "b")
    assert delivery_of(SECRET, f"{flipped}@{domain}") is None
    assert delivery_of(b"x" * 32, sender) is None
    assert delivery_of(SECRET, "postmaster@bounces.acme.example") is None


def test_tokens_expire_after_their_lifetime() -> None:
    today = int(time.time() // 86400)
    fresh = address(SECRET, 7, "b.example", day=today - LIFETIME_DAYS)
    stale = address(SECRET, 7, "b.example", day=today - LIFETIME_DAYS - 1)
    assert delivery_of(SECRET, fresh) == 7
    assert delivery_of(SECRET, stale) is None


def test_tokens_without_a_day_are_still_read() -> None:
    payload = (7).to_bytes(8, "big")
    mac = hmac.new(SECRET, b"verp\0" + payload, hashlib.sha256).digest()[:10]
    token = base64.b32encode(payload + mac).decode().rstrip("=").lower()
    assert delivery_of(SECRET, f"b-{token}@b.example") == 7
