"""SMTP AUTH credentials: argon2 verification, failure delay and lockout (RFC 4954).

Passwords are stored only as argon2 hashes (`relay hash-password`). Verifying one costs tens
of milliseconds of CPU, so it runs in a thread, not on the event loop; a successful check is
remembered for a few minutes under a per-process HMAC key so that devices reconnecting for
every message do not pay it each time (as Dovecot's auth cache does).

Lockout, so that guessing stops without handing an attacker a way to lock others out:
- `auth_max_failures` failures of one username from one client address within the window
  lock that pair, and as many from one address (any usernames) lock that address, for
  `auth_lockout`: guessing from one address stops, and nobody else is affected;
- `auth_account_failures` failures of one username from all addresses together (guessing
  one account from many addresses) throttle the account: for `auth_lockout`, only addresses
  with no failure of their own in the window may try it, so its owner, logging in with the
  right password from their usual address, is never refused.
An unknown username costs the same argon2 verification as a known one (against a hash made
at start), so the answer's timing does not tell which usernames exist.
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
        self._decoy = _hasher.hash(os.urandom(16).hex())

    def update(self, settings: SmtpSection, accounts: Mapping[str, Account]) -> None:
        self._settings = settings
        self._accounts = dict(accounts)
        self._verified.clear()

    async def authenticate(self, username: str, password: str, client_ip: str) -> str | None:
        """The tenant name for valid credentials, None for invalid ones (after the delay).

        Raises LockedOut without checking the password while the (username, address) pair
        or the address is locked, or the username is throttled and this address has failed
        before."""
        now = time.monotonic()
        pair, address, user = f"pair:{username}\0{client_ip}", f"ip:{client_ip}", f"user:{username}"
        if self._locked(pair, now) or self._locked(address, now):
            raise LockedOut()
        if self._locked(user, now) and self._recent(address, now):
            raise LockedOut()
        account = self._accounts.get(username)
        expected = account.password_hash if account else self._decoy
        if await self._password_matches(username, password, expected) and account:
            return account.tenant
        self._record_failure(pair, now, self._settings.auth_max_failures)
        self._record_failure(address, now, self._settings.auth_max_failures)
        self._record_failure(user, now, self._settings.auth_account_failures)
        await asyncio.sleep(self._settings.auth_failure_delay)
        return None

    def _locked(self, key: str, now: float) -> bool:
        return self._locked_until.get(key, 0) > now

    def _recent(self, key: str, now: float) -> bool:
        """Whether `key` failed within the window (or is locked)."""
        failures = self._failures.get(key)
        window = self._settings.auth_failure_window
        return bool(failures and failures[-1] >= now - window) or self._locked(key, now)

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

    def _record_failure(self, key: str, now: float, limit: int) -> None:
        failures = self._failures[key]
        failures.append(now)
        while failures and failures[0] < now - self._settings.auth_failure_window:
            failures.popleft()
        if len(failures) >= limit:
            self._locked_until[key] = now + self._settings.auth_lockout
            failures.clear()
            failures.append(now)  # still counts as an address that failed recently
        if len(self._failures) > 100_000:  # a flood of usernames or addresses: forget the old
            self._forget(now)

    def _forget(self, now: float) -> None:
        window = self._settings.auth_failure_window
        for key in [k for k, f in self._failures.items() if not f or f[-1] < now - window]:
            del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
