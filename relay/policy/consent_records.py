"""P-CONSENT-RECORD: what a consent record must hold to prove consent.

A record holds when (`consented_at`, ISO 8601; a time without a zone is UTC), from where
(`source`: an IP address or other identifier), which form (`form_version`), the text shown
(`consent_text`) and how (`method`: web-form, double-opt-in, paper, verbal). A record that
lacks any of them proves nothing and is refused with the reason. The same rules hold for
the CSV import (`relay consent import`) and the HTTP API (`POST /v1/consent`).
"""

from collections.abc import Mapping
from datetime import UTC, datetime

from relay.mail.address import AddressError, parse_path

COLUMNS = ("address", "consented_at", "source", "form_version", "consent_text", "method")
METHODS = ("web-form", "double-opt-in", "paper", "verbal")

Record = tuple[str, datetime, str, str, str, str]


def parse_record(row: Mapping[str, object]) -> Record:
    """One record from CSV or JSON, or ValueError saying why it is no proof of consent."""
    values = {c: str(row.get(c) or "").strip() for c in COLUMNS}
    missing = [c for c in COLUMNS if not values[c]]
    if missing:
        raise ValueError(f"empty {', '.join(missing)}")
    try:
        address = parse_path(f"TO:<{values['address']}>", "TO:").address
    except AddressError as exc:
        raise ValueError(f"bad address {values['address']!r}: {exc}") from exc
    try:
        when = datetime.fromisoformat(values["consented_at"])
    except ValueError as exc:
        raise ValueError(f"consented_at {values['consented_at']!r} is not ISO 8601") from exc
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when > datetime.now(UTC):
        raise ValueError(f"consented_at {values['consented_at']!r} is in the future")
    method = values["method"].lower()
    if method not in METHODS:
        raise ValueError(f"method {values['method']!r} is not one of {', '.join(METHODS)}")
    return (address, when, values["source"], values["form_version"], values["consent_text"],
            method)  # fmt: skip
