"""Return-path addresses (VERP) that name the delivery they came from.

With a tenant's `return_path_domain` set, each delivery leaves with the envelope sender
`b-TOKEN@return_path_domain`, TOKEN being the delivery id and an HMAC-SHA256 over it
(truncated to 80 bits) in lower-case base32, so the local part stays case-insensitive
(RFC 5321 2.4 lets receivers fold case) and short. A bounce sent there, even one that
quotes nothing of the original, maps back to the exact (message, recipient); a forged or
altered token is refused at RCPT, so the feedback listener stores no backscatter.
"""

import base64
import hashlib
import hmac
import re

PREFIX = "b-"
_MAC_BYTES = 10
_LOCAL = re.compile(r"^b-([a-z2-7]{29,32})$", re.IGNORECASE)


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"verp\0" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def address(secret: bytes, delivery_id: int, domain: str) -> str:
    """The envelope sender of delivery `delivery_id` at `domain`."""
    payload = delivery_id.to_bytes(8, "big")
    token = base64.b32encode(payload + _mac(secret, payload)).decode("ascii").rstrip("=").lower()
    return f"{PREFIX}{token}@{domain}"


def delivery_of(secret: bytes, recipient: str) -> int | None:
    """The delivery id a return-path address names, or None if it is not one of ours."""
    local = recipient.rpartition("@")[0]
    match = _LOCAL.match(local)
    if match is None:
        return None
    text = match.group(1).upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return None
    payload, mac = raw[:8], raw[8:]
    if len(payload) != 8 or not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    return int.from_bytes(payload, "big")
