"""Webhooks: each tenant's events POSTed to its `webhook_url`, in id order, at least once.

What a tenant receives (one request per batch of up to `BATCH_SIZE` events)::

    POST <webhook_url>
    Content-Type: application/json
    X-Relay-Timestamp: 1767225600
    X-Relay-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

    {"tenant": "acme", "events": [{"id": 41, "kind": "delivered", "at": "...Z",
     "message_id": "...", "recipient": "...", "site": "...", "provider": "...",
     "campaign": "...", "detail": {...}}, ...]}

`site` is the registered domain of the destination's MX hosts; `provider`, its old name,
is still sent with the same value so that receivers written before the rename keep
working, and is deprecated (docs/feedback.md).

The signature covers the timestamp, so a receiver that also refuses old timestamps (five
minutes is usual) refuses replays; this is the scheme Stripe and Postmark use. The secret is
read from the tenant's `webhook_secret_file`, never from `relay.toml`.

Delivery guarantees, and how they are kept:

- **At least once, in order.** Only a 2xx answer moves the tenant's cursor
  (`webhook_cursors.last_event`) to the batch's last id. Anything else (another status, a
  redirect, a timeout after `TIMEOUT_SECONDS`, a connection error) keeps it, and the same
  batch is posted again after a backoff of 1 s doubling up to 10 minutes, with jitter so the
  tenants of a shared outage do not all come back in the same second. Receivers de-duplicate
  by event id.
- **One poster per tenant.** Several relay processes may share the database. A dispatcher
  claims a tenant by moving its `next_try_at` past the POST's timeout (`LEASE_SECONDS`) in
  one statement, and writes the outcome only where `next_try_at` still holds its claim, like
  the delivery leases. The claim is a row value, not a transaction held open: no database
  connection waits on a tenant's HTTP server, so a slow receiver never takes connections
  from delivery. A process that dies mid-POST loses its claim when it expires.
- **No event skipped.** Ids come from a sequence, so a transaction can commit id 8 while the
  one holding id 7 is still open; a reader that moved its cursor to 8 would never see 7.
  `CommittedHorizon` posts only up to an id below which every transaction has ended.

It never blocks delivery: it is its own task, with its own aiohttp session, reading events
that `relay.queue.events.record` committed; polling every `POLL_SECONDS` finds them.
"""

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import Counter

from relay.config.schema import Config
from relay.public_address import NotPublic, PublicResolver, is_public
from relay.queue.database import Pool
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.webhooks import CommittedHorizon, WebhookCursors

log = logging.getLogger(__name__)

BATCH_SIZE = 100
TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 30.0
"""How long a claim on a tenant lasts: past the POST's timeout and the database round trips."""
POLL_SECONDS = 1.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 600.0
MIN_SECRET_BYTES = 16
PARALLEL_TENANTS = 16
"""Tenants posted for at once by one process (each POST holds no database connection)."""

_HTTP_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)

WEBHOOK_POSTS = Counter(
    "relay_webhook_posts_total",
    "Webhook POSTs by tenant and outcome: ok (a 2xx, the tenant's cursor moved on) or failed "
    "(another status, a timeout or a connection error; the same batch is posted again with "
    "backoff). A tenant with failed rising and ok flat is not getting its events: its "
    "webhook_cursors row holds the last error and the next try.",
    ["tenant", "outcome"],
)


@dataclass(frozen=True)
class Target:
    """Where one tenant's events go, and the secret that signs them."""

    tenant: str
    url: str
    secret: bytes
    private: bool = False
    """The tenant may use http and a private address (`webhook_private`)."""


def load_webhook_secret(path: str) -> bytes:
    """The signing secret in `path`, surrounding whitespace stripped (a trailing newline is
    not part of it); short secrets are refused, HMAC-SHA256 wants a real key."""
    secret = Path(path).read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path}: the webhook secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """`X-Relay-Signature` of `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `failures`-th failure in a row: 1 s, 2 s, 4 s ... at most
    10 minutes, each drawn from the upper half of its step so retries spread out."""
    step = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(max(failures, 1) - 1, 30))
    return step * (0.5 + rng() / 2)


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One `events` row as receivers and `relay events tail --json` see it."""
    detail = row["detail"]
    at: datetime = row["at"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "at": at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "message_id": str(row["message_id"]) if row["message_id"] is not None else None,
        "recipient": row["recipient"],
        "site": row["site"],
        # The deprecated old name of `site`: receivers written before the rename read it.
        "provider": row["site"],
        "campaign": row["campaign"],
        "detail": json.loads(detail) if isinstance(detail, str) else detail,
    }


def encode_batch(tenant: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The request body: the exact bytes that are signed."""
    payload = {"tenant": tenant, "events": [event_json(r) for r in rows]}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def targets_of(config: Config) -> dict[str, Target]:
    """Tenants with a webhook and a usable secret. A tenant whose secret cannot be read is
    left out with an error logged: its events wait, its cursor stays, nothing is lost."""
    targets = {}
    for tenant in config.tenants:
        if not tenant.webhook_url:
            continue
        try:
            secret = load_webhook_secret(tenant.webhook_secret_file)
        except (OSError, ValueError) as exc:
            log.error("tenant %s: webhook paused, no usable secret: %s", tenant.name, exc)
            continue
        targets[tenant.name] = Target(
            tenant.name, tenant.webhook_url, secret, tenant.webhook_private
        )
    return targets


class WebhookDispatcher:
    """Posts every webhook tenant's events; one per relay process, beside delivery."""

    def __init__(self, pool: Pool, config: Config) -> None:
        self.cursors = WebhookCursors(pool)
        self.horizon = CommittedHorizon(pool)
        self.targets: dict[str, Target] = {}
        self._session: aiohttp.ClientSession | None = None
        self._private_session: aiohttp.ClientSession | None = None
        self._posting: dict[str, asyncio.Task[None]] = {}
        self._claims: dict[str, datetime] = {}  # tenant -> lease held while posting
        self._retry_upto: dict[str, int] = {}  # tenant -> last id of the batch that failed
        self._slots = asyncio.Semaphore(PARALLEL_TENANTS)
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Take new webhook URLs and re-read the secrets (SIGHUP)."""
        self.targets = targets_of(config)

    async def run(self) -> None:
        """Poll and post until cancelled; then give back the claims of POSTs cut short."""
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        public = aiohttp.TCPConnector(resolver=PublicResolver())
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=public) as session,
            aiohttp.ClientSession(timeout=timeout) as private_session,
        ):
            self._session, self._private_session = session, private_session
            try:
                while True:
                    try:
                        await self._poll_once()
                    except Exception:  # a bug here must not stop the relay's mail
                        log.exception("webhooks: poll failed")
                    await asyncio.sleep(POLL_SECONDS)
            finally:
                for task in list(self._posting.values()):
                    task.cancel()
                await asyncio.gather(*self._posting.values(), return_exceptions=True)
                await self._release_claims()
                self._session = self._private_session = None

    async def _poll_once(self) -> None:
        targets = self.targets
        if not targets:
            return
        try:
            horizon = await self.horizon.advance()
            due = await self.cursors.due(list(targets), horizon)
        except DATABASE_ERRORS as exc:
            log.warning("webhooks: cannot read events: %r", exc)
            return
        for tenant in due:
            if tenant in self._posting:
                continue
            task = asyncio.create_task(self._drain(tenant), name=f"webhook:{tenant}")
            self._posting[tenant] = task
            task.add_done_callback(lambda _, t=tenant: self._posting.pop(t, None))

    async def _drain(self, tenant: str) -> None:
        """Post batches for one tenant while full batches succeed."""
        async with self._slots:
            while (target := self.targets.get(tenant)) is not None:
                try:
                    more = await self._post_next(target)
                except DATABASE_ERRORS as exc:
                    log.warning("webhooks: tenant %s: database error: %r", tenant, exc)
                    return
                except Exception:  # a bug must not end the dispatcher; the claim expires
                    log.exception("webhooks: tenant %s: unexpected error", tenant)
                    return
                if not more:
                    return

    async def _post_next(self, target: Target) -> bool:
        """Claim the tenant, post its next batch, record the outcome. True when a full batch
        was acknowledged (more may be waiting)."""
        tenant = target.tenant
        claim = await self.cursors.claim(tenant, LEASE_SECONDS)
        if claim is None:
            return False  # another process is posting, or the tenant is backing off
        lease, cursor = claim.lease, claim.last_event
        self._claims[tenant] = lease
        upto = self.horizon.settled
        retry_upto = self._retry_upto.pop(tenant, None)
        if retry_upto is not None and retry_upto > cursor:
            upto = min(upto, retry_upto)  # the failed batch again, not a longer one
        rows = await self.cursors.batch(tenant, cursor, upto, BATCH_SIZE)
        if not rows:
            await self.cursors.advance(tenant, lease, cursor)
            self._claims.pop(tenant, None)
            return False
        error = await self._post(target, encode_batch(tenant, rows))
        last_id: int = rows[-1]["id"]
        if error is None:
            held = await self.cursors.advance(tenant, lease, last_id)
            WEBHOOK_POSTS.labels(tenant, "ok").inc()
        else:
            failures = claim.failures + 1
            delay = backoff(failures)
            held = await self.cursors.failed(tenant, lease, error[:500], delay)
            self._retry_upto[tenant] = last_id
            WEBHOOK_POSTS.labels(tenant, "failed").inc()
            log.warning(
                "webhooks: tenant %s: events %d-%d not accepted (%s), failure %d, next try "
                "in %.1f s",
                tenant, rows[0]["id"], last_id, error, failures, delay,
            )  # fmt: skip
        self._claims.pop(tenant, None)
        if not held:
            log.warning("webhooks: tenant %s: claim expired during the POST", tenant)
        return error is None and len(rows) == BATCH_SIZE

    async def _post(self, target: Target, body: bytes) -> str | None:
        """POST one batch; None on a 2xx, else what went wrong (for `last_error`)."""
        assert self._session is not None, "post only while run() is running"
        session = self._session
        if target.private:
            assert self._private_session is not None
            session = self._private_session
        else:
            host = urlsplit(target.url).hostname or ""
            if not target.url.lower().startswith("https://"):
                return "refused: a webhook must use https (or the tenant webhook_private)"
            if _literal(host) and not is_public(host):
                return f"refused: {host} is not a public address (see webhook_private)"
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Relay-Timestamp": str(timestamp),
            "X-Relay-Signature": signature(target.secret, timestamp, body),
        }
        try:
            # No redirects: a signed POST goes where the tenant configured, or fails.
            async with session.post(
                target.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status} {response.reason or ''}".rstrip()
        except _HTTP_ERRORS as exc:
            if isinstance(exc.__cause__, NotPublic):
                return f"refused: {exc.__cause__} (see webhook_private)"
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _release_claims(self) -> None:
        """Make tenants whose POST was cut short due again at once (any process)."""
        if not self._claims:
            return
        with contextlib.suppress(*DATABASE_ERRORS):
            async with asyncio.timeout(2):
                for tenant, lease in list(self._claims.items()):
                    await self.cursors.release(tenant, lease)
        self._claims.clear()
