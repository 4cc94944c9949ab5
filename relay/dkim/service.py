"""Which keys sign a message: the tenant domain that owns the From domain (P-DKIM).

The signature's `d=` is the tenant's sending domain that the From address is in (the
domain itself or a parent of it), so DMARC's relaxed alignment holds (RFC 7489 3.1.1).
Keys are read from `data_dir/dkim` at start and on reload, never per message.
"""

import logging
import re
from email.utils import getaddresses
from pathlib import Path

from relay.config.schema import TenantSection
from relay.dkim.keys import load_signing_keys
from relay.dkim.sign import SigningKey, sign
from relay.smtp.address import AddressError, to_a_label

log = logging.getLogger(__name__)
_FROM = re.compile(rb"^from[ \t]*:((?:[^\r\n]*)(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M)


def from_domain(message: bytes) -> str | None:
    """The A-label domain of the first address in the From header, if there is one."""
    end = message.find(b"\r\n\r\n")
    head = b"\r\n" + (message if end < 0 else message[: end + 2])
    match = _FROM.search(head)
    if not match:
        return None
    value = match.group(1).decode("utf-8", "replace").replace("\r\n", "")
    for _, address in getaddresses([value]):
        if "@" in address:
            try:
                return to_a_label(address.rpartition("@")[2])
            except AddressError:
                return None
    return None


class DkimSigner:
    """Signs each accepted message with the keys of its tenant's matching domain."""

    def __init__(self, data_dir: str, expire_after: float | None) -> None:
        self.root = Path(data_dir) / "dkim"
        self.expire_after = expire_after
        self.keys: dict[str, list[SigningKey]] = {}
        self.reload()

    def reload(self) -> None:
        self.keys = load_signing_keys(self.root)
        log.info("DKIM keys loaded for %d domains", len(self.keys))

    def keys_for(self, tenant: TenantSection, domain: str | None) -> list[SigningKey]:
        if domain is None:
            return []
        for owned in sorted(tenant.domains, key=len, reverse=True):
            if (domain == owned or domain.endswith("." + owned)) and owned in self.keys:
                return self.keys[owned]
        return []

    def sign(self, tenant: TenantSection, message: bytes) -> bytes:
        """The message with its signatures on top; unchanged when no key applies."""
        domain = from_domain(message)
        keys = self.keys_for(tenant, domain)
        if not keys:
            log.warning("no DKIM key for From domain %s of tenant %s", domain, tenant.name)
            return message
        return sign(message, keys, expire_after=self.expire_after)
