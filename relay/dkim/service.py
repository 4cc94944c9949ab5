"""Which keys sign a message: the tenant domain that owns the From domain (P-DKIM).

The signature's `d=` is the tenant's sending domain that the From address is in (the
domain itself or a parent of it), so DMARC's relaxed alignment holds (RFC 7489 3.1.1).
Keys are read from `data_dir/dkim` at start and on reload, never per message.
"""

import logging
from pathlib import Path

from relay.config.schema import TenantSection
from relay.config.tenants import is_within
from relay.dkim.keys import load_signing_keys
from relay.dkim.sign import SigningKey, sign

log = logging.getLogger(__name__)


class DkimSigner:
    """Signs each accepted message with the keys of its tenant's matching domain."""

    def __init__(self, data_dir: str, expire_after: float | None) -> None:
        self.root = Path(data_dir) / "dkim"
        self.expire_after = expire_after
        self.keys: dict[str, list[SigningKey]] = {}
        self.domains: frozenset[str] = frozenset()
        """The domains with an active key, which P-DKIM asks about for every message."""
        self._warned: set[tuple[str, str | None]] = set()
        self.reload()

    def reload(self) -> None:
        self.keys = load_signing_keys(self.root)
        self.domains = frozenset(self.keys)
        self._warned.clear()
        log.info("DKIM keys loaded for %d domains", len(self.keys))

    def keys_for(self, tenant: TenantSection, domain: str | None) -> list[SigningKey]:
        if domain is None:
            return []
        for owned in sorted(tenant.domains, key=len, reverse=True):  # most specific first
            if owned in self.keys and is_within(domain, owned):
                return self.keys[owned]
        return []

    def sign(
        self,
        tenant: TenantSection,
        message: bytes,
        domain: str | None,
        *,
        crlf_checked: bool = False,
    ) -> bytes:
        """The message with its signatures on top for From domain `domain` (an A-label);
        unchanged when no key applies, which P-DKIM lets through only with `[dkim]
        allow_unsigned`. `crlf_checked` as for `relay.dkim.sign.sign`."""
        keys = self.keys_for(tenant, domain)
        if not keys:
            if (tenant.name, domain) not in self._warned:  # once per domain, not per message
                self._warned.add((tenant.name, domain))
                log.warning("no DKIM key for From domain %s of tenant %s", domain, tenant.name)
            return message
        return sign(message, keys, expire_after=self.expire_after, crlf_checked=crlf_checked)
