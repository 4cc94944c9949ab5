"""DKIM keys on disk: generation, the DNS record to publish, and rotation.

Layout under `data_dir/dkim/DOMAIN/`: one PKCS#8 PEM file per selector (mode 0600) and
`state.json`, which says per algorithm which selector is `active` (signs now), which is
`next` (generated, waiting for its DNS record) and which were `retired` (no longer sign, but
their DNS records must stay published for a grace period so mail signed just before the
rotation still verifies on arrival).

A new key never signs before its record is published: `relay dkim keygen` makes a `next`
key, and `relay dkim rotate` promotes it only after looking the record up in DNS (the first
key of a domain is promoted the same way).
"""

import base64
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relay.config.tenants import is_within
from relay.dkim.sign import PrivateKey, SigningKey

Algorithm = Literal["rsa", "ed25519"]
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
"""RFC 6376 3.1: a selector is a sub-domain (no `/`, no `..`: it names a file too)."""


def generate(algorithm: Algorithm) -> PrivateKey:
    """RSA-2048 (RFC 8301's recommended size) or Ed25519 (RFC 8463)."""
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def dns_record(key: PrivateKey) -> str:
    """The TXT record value for `selector._domainkey.domain` (RFC 6376 3.6.1, RFC 8463 4)."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@dataclass
class AlgorithmState:
    active: str | None = None
    next: str | None = None
    retired: list[dict[str, float | str]] = field(default_factory=list)


class DomainKeys:
    """The keys of one domain in `data_dir/dkim/DOMAIN`."""

    def __init__(self, root: Path, domain: str) -> None:
        self.domain = domain
        self.directory = root / domain
        self.state: dict[str, AlgorithmState] = {}
        path = self.directory / "state.json"
        if path.exists():
            raw = json.loads(path.read_text())
            self.state = {alg: AlgorithmState(**value) for alg, value in raw.items()}

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.directory / "state.json.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({k: v.__dict__ for k, v in self.state.items()}, indent=2))
        tmp.replace(self.directory / "state.json")

    def key_path(self, selector: str) -> Path:
        if not SELECTOR.fullmatch(selector):
            raise ValueError(
                f"{selector!r} is not a DKIM selector: labels of letters, digits and hyphens "
                "separated by dots (RFC 6376 3.1)"
            )
        return self.directory / f"{selector}.pem"

    def load_key(self, selector: str) -> PrivateKey:
        key = serialization.load_pem_private_key(self.key_path(selector).read_bytes(), None)
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError(f"{self.key_path(selector)}: not an RSA or Ed25519 key")
        return key

    def add_next(self, algorithm: Algorithm, selector: str | None = None) -> tuple[str, PrivateKey]:
        """Generate a key and make it this algorithm's `next`; return (selector, key)."""
        selector = selector or self._free_selector(algorithm)
        if self.key_path(selector).exists():
            raise FileExistsError(f"selector {selector} already exists for {self.domain}")
        key = generate(algorithm)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(self.key_path(selector), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        self.state.setdefault(algorithm, AlgorithmState()).next = selector
        self.save()
        return selector, key

    def promote(self, algorithm: Algorithm) -> tuple[str, str | None]:
        """Make `next` the active key; the old active one is retired. Returns (new, old)."""
        state = self.state.get(algorithm)
        if state is None or state.next is None:
            raise LookupError(f"{self.domain} has no next {algorithm} key: run relay dkim keygen")
        old = state.active
        if old:
            state.retired.append({"selector": old, "retired_at": time.time()})
        state.active, state.next = state.next, None
        self.save()
        return state.active, old

    def signing_keys(self) -> list[SigningKey]:
        return [
            SigningKey(self.domain, s.active, self.load_key(s.active))
            for s in self.state.values()
            if s.active
        ]

    def _free_selector(self, algorithm: Algorithm) -> str:
        base = f"{algorithm}{time.strftime('%Y%m')}"
        selector, n = base, 1
        while self.key_path(selector).exists():
            n += 1
            selector = f"{base}{chr(ord('a') + n - 2)}"
        return selector


def has_active_key(root: Path, domain: str) -> bool:
    return any(state.active for state in DomainKeys(root, domain).state.values())


def unsigned_domains(root: Path, domains: Sequence[str]) -> list[str]:
    """Those of one tenant's sending `domains` whose mail no active key under `root`
    (data_dir/dkim) would sign: neither the domain nor a parent of it among `domains` has
    one (the signer takes such a parent, `relay.dkim.service`). P-DKIM refuses their mail."""
    keyed = [d for d in domains if has_active_key(root, d)]
    return [d for d in domains if not any(is_within(d, k) for k in keyed)]


def activate_missing_keys(root: Path, domains: Sequence[str]) -> list[str]:
    """Make and activate at once an RSA key for each of one tenant's `domains` that
    `unsigned_domains` names (parents first, so a subdomain is covered by its parent's);
    returns the domains that got one. The record is not looked up in DNS: only for `[dkim]
    generate_missing` (the demo, tests whose domains have no DNS). Anywhere else a key signs
    only after `relay dkim rotate` has seen its record published."""
    made: list[str] = []
    for domain in sorted(unsigned_domains(root, domains), key=len):
        if any(is_within(domain, parent) for parent in made):
            continue
        keys = DomainKeys(root, domain)
        rsa_state = keys.state.get("rsa")
        if rsa_state is None or rsa_state.next is None:
            keys.add_next("rsa")
        keys.promote("rsa")
        made.append(domain)
    return made


def load_signing_keys(root: Path) -> dict[str, list[SigningKey]]:
    """Active keys of every domain under `root` (data_dir/dkim), by domain."""
    if not root.is_dir():
        return {}
    keys = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        active = DomainKeys(root, directory.name).signing_keys()
        if active:
            keys[directory.name] = active
    return keys
