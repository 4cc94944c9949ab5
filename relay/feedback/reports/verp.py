"""Return-path addresses (VERP) that name the delivery they came from.

With a tenant's `return_path_domain` set, each delivery leaves with the envelope sender
`b-TOKEN@return_path_domain`, TOKEN being the delivery id, the day it was made and an
HMAC-SHA256 over both (truncated to 80 bits) in lower-case base32, so the local part stays
case-insensitive (RFC 5321 2.4 lets receivers fold case) and short. A bounce sent there,
even one that quotes nothing of the original, maps back to the exact (message, recipient);
a forged or altered token is refused at RCPT, so the feedback listener stores no
backscatter, and so is one older than `[feedback] return_path_lifetime` (every recipient
sees the address: it must not name its delivery for ever). Tokens made before they carried
their day (18 bytes, 29 characters) are still read.
"""

import base64
import hashlib
import hmac
import re
import time

PREFIX = "b-"
_MAC_BYTES = 10
LIFETIME_DAYS = 30
"""The default: bounces come within days of a delivery (the queue gives up after five)."""
_LOCAL = re.compile(r"^b-([a-z2-7]{29,32})$", re.IGNORECASE)


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"verp\0" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _today() -> int:
    return int(time.time() // 86400)


def address(secret: bytes, delivery_id: int, domain: str, day: int | None = None) -> str:
    """The envelope sender of delivery `delivery_id` at `domain`, made on `day` (today)."""
    payload = delivery_id.to_bytes(8, "big") + (
        (_today() if day is None else day) % 65536
    ).to_bytes(2, "big")
    token = base64.b32encode(payload + _mac(secret, payload)).decode("ascii").rstrip("=").lower()
    return f"{PREFIX}{token}@{domain}"


def delivery_of(secret: bytes, recipient: str, lifetime_days: int = LIFETIME_DAYS) -> int | None:
    """The delivery id a return-path address names, or None if it is not one of ours (or
    is older than `lifetime_days`)."""
    local = recipient.rpartition("@")[0]
    match = _LOCAL.match(local)
    if match is None:
        return None
    text = match.group(1).upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return None
    dated = len(raw) == 8 + 2 + _MAC_BYTES
    payload, mac = (raw[:10], raw[10:]) if dated else (raw[:8], raw[8:])
    if len(payload) not in (8, 10) or not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    if dated and (_today() - int.from_bytes(payload[8:], "big")) % 65536 > lifetime_days:
        return None
    return int.from_bytes(payload[:8], "big")
