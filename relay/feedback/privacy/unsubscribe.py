"""Signed one-click unsubscribe URIs (RFC 8058) that the relay adds for tenants that ask.

The token carries the tenant, the recipient, the message id and the day it was made, and an
HMAC-SHA256 over them with the deployment's secret, so nobody can forge or alter one to
unsubscribe (or re-subscribe) someone else; it works for `[policy] unsubscribe_lifetime`
(CAN-SPAM wants an opt-out honoured for 30 days after sending at least), after which the
recipient uses the visible link. Tokens made before they carried their day are still
honoured. The endpoint that honours a POST to it verifies the token with `verify`; a GET
must change nothing (mail scanners prefetch links).

The secret is never in `relay.toml`: it is read from the file `[policy]
unsubscribe_secret_file` names, or from the environment variable RELAY_UNSUBSCRIBE_SECRET.
"""

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

SECRET_ENV = "RELAY_UNSUBSCRIBE_SECRET"
LIFETIME_DAYS = 90


class BadToken(ValueError):
    """Forged, altered or malformed: answer 403 and change nothing."""


@dataclass(frozen=True)
class Unsubscribe:
    tenant: str
    recipient: str
    message_id: str


def load_secret(secret_file: str) -> bytes | None:
    """The signing secret from the configured file or the environment, if any."""
    if secret_file:
        secret = Path(secret_file).read_bytes().strip()
    else:
        secret = os.environ.get(SECRET_ENV, "").encode()
    if secret and len(secret) < 32:
        raise ValueError("the unsubscribe secret must be at least 32 bytes")
    return secret or None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, request: Unsubscribe, day: int | None = None) -> str:
    issued = int(time.time() // 86400) if day is None else day
    payload = json.dumps(
        {"t": request.tenant, "r": request.recipient, "m": request.message_id, "d": issued},
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify(secret: bytes, token: str, lifetime_days: int = LIFETIME_DAYS) -> Unsubscribe:
    """The request a token stands for; BadToken unless it was made with `secret` at most
    `lifetime_days` ago."""
    try:
        payload_text, mac_text = token.split(".", 1)
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except ValueError as exc:
        raise BadToken("malformed token") from exc
    if not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()):
        raise BadToken("signature does not match")
    try:
        data = json.loads(payload)
        wanted = Unsubscribe(str(data["t"]), str(data["r"]), str(data["m"]))
        issued = int(data.get("d", time.time() // 86400))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadToken("malformed payload") from exc
    if time.time() // 86400 - issued > lifetime_days:
        raise BadToken(f"the token is older than {lifetime_days} days")
    return wanted


def headers(base_url: str, secret: bytes, request: Unsubscribe) -> bytes:
    """The RFC 8058 header pair pointing at our endpoint, as header lines."""
    url = f"{base_url.rstrip('/')}/{sign(secret, request)}"
    return (
        f"List-Unsubscribe: <{url}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    ).encode()
