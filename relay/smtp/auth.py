"""SMTP AUTH credentials: argon2 verification, failure delay and lockout (RFC 4954).

Passwords are stored only as argon2 hashes (`relay hash-password`). Verifying one costs tens
of milliseconds of CPU, so it runs in a thread, not on the event loop; a successful check is
remembered for a few minutes under a per-process HMAC key so that devices reconnecting for
every message do not pay it each time (as Dovecot's auth cache does). After
`auth_max_failures` failures within the window, both the account and the client address are
locked out for `auth_lockout`: password guessing from one address, and guessing one account
from many addresses, both stop.
"""

import asyncio
import hashlib
import hmac
import os
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from relay.config.schema import SmtpSection

_hasher = PasswordHasher()
_SUCCESS_CACHE_SECONDS = 300.0


def hash_password(password: str) -> str:
    """An argon2id hash for `relay.toml` (what `relay hash-password` prints)."""
    return _hasher.hash(password)


@dataclass(frozen=True)
class Account:
    tenant: str
    password_hash: str


class LockedOut(Exception):
    """The account or the client address has failed too often; answer 454 4.7.0."""


class Authenticator:
    """Checks logins against the configured accounts and keeps the lockout state.

    The lockout state survives `update_accounts` (a SIGHUP reload), so a reload cannot be
    used to reset it.
    """

    def __init__(self, settings: SmtpSection, accounts: Mapping[str, Account]) -> None:
        self._settings = settings
        self._accounts = dict(accounts)
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}
        self._cache_key = os.urandom(32)
        self._verified: dict[bytes, float] = {}

    def update(self, settings: SmtpSection, accounts: Mapping[str, Account]) -> None:
        self._settings = settings
        self._accounts = dict(accounts)
        self._verified.clear()

    async def authenticate(self, username: str, password: str, client_ip: str) -> str | None:
        """The tenant name for valid credentials, None for invalid ones (after the delay).

        Raises LockedOut without checking the password while the account or address is locked.
        """
        now = time.monotonic()
        keys = (f"user:{username}", f"ip:{client_ip}")
        if any(self._locked_until.get(k, 0) > now for k in keys):
            raise LockedOut()
        account = self._accounts.get(username)
        if account and await self._password_matches(username, password, account.password_hash):
            return account.tenant
        for key in keys:
            self._record_failure(key, now)
        await asyncio.sleep(self._settings.auth_failure_delay)
        return None

    async def _password_matches(self, username: str, password: str, password_hash: str) -> bool:
        digest = hmac.new(
            self._cache_key, f"{username}\0{password}\0{password_hash}".encode(), hashlib.sha256
        ).digest()
        if self._verified.get(digest, 0) > time.monotonic():
            return True
        ok = await asyncio.to_thread(_verify, password_hash, password)
        if ok:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[digest] = time.monotonic() + _SUCCESS_CACHE_SECONDS
        return ok

    def _record_failure(self, key: str, now: float) -> None:
        failures = self._failures[key]
        failures.append(now)
        while failures and failures[0] < now - self._settings.auth_failure_window:
            failures.popleft()
        if len(failures) >= self._settings.auth_max_failures:
            self._locked_until[key] = now + self._settings.auth_lockout
            failures.clear()


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
