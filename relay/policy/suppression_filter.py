"""P-SUPPRESS without a database round trip for every RCPT.

Every process that takes submissions keeps a Bloom filter of the (tenant, address) pairs on
the suppression list. A recipient the filter does not hold is not on the list, and RCPT
answers at once; one it holds is looked up in the database as before, which is the
authority and gives the reason and date the refusal names. The filter may hold more than
the list: about one address in a hundred that was never suppressed (`_BITS_PER_ENTRY`,
`_HASHES`), and entries removed since it was loaded; both only cost that look-up. It must
never hold less, so:

- A trigger (migration 0013) notifies `relay_suppressions` with the tenant and address of
  every row inserted or updated; the filter LISTENs before it reads the whole list, so an
  entry committed during the read is notified, and adding it twice changes nothing.
- While its connection is down, or before its first read ends, the filter answers "do not
  know" and every RCPT asks the database (a database that cannot answer defers the
  recipient with 451, as before). A lost connection is reported by asyncpg at once, and the
  list is read afresh on the next one, since notifications sent meanwhile are lost.
- A new entry takes effect in each process when its notification arrives, about a
  millisecond after its commit: a look-up racing that commit had the same window.
- Addresses are lower-cased by PostgreSQL when stored and by Python here; the two agree on
  ASCII wherever the database lowers ASCII the usual way (checked when connecting; a
  Turkish locale does not), and a recipient that is not ASCII is always looked up.

Memory: `_BITS_PER_ENTRY` bits per entry, with room for twice the list's size when read
(2.5 MB per million suppressed addresses, per process). The list is read again only when
additions have filled that room, or, at most every `_RELOAD_SECONDS`, when entries were
removed since it was read (a trigger, migration 0021, says so): entries removed meanwhile
cost only a look-up, and a list that only grows is never read twice.
"""

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Iterator

from relay import metrics
from relay.queue.suppressions import SuppressionFeed

log = logging.getLogger(__name__)

_BITS_PER_ENTRY = 10
_HASHES = 7  # with 10 bits an entry: about 0.8% false positives when full
_MIN_CAPACITY = 100_000
_RELOAD_SECONDS = 3600.0
_CHECK_SECONDS = 5.0
_RETRY_SECONDS = 2.0


class BloomFilter:
    """A set that can answer "surely not" or "maybe" (Bloom 1970), with double hashing
    (Kirsch and Mitzenmacher 2006) over one BLAKE2b digest."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, _MIN_CAPACITY)
        self.size = self.capacity * _BITS_PER_ENTRY
        self.bits = bytearray((self.size + 7) // 8)
        self.count = 0

    def _positions(self, key: bytes) -> Iterator[int]:
        digest = hashlib.blake2b(key, digest_size=16).digest()
        first = int.from_bytes(digest[:8], "little")
        step = int.from_bytes(digest[8:], "little") | 1
        return ((first + i * step) % self.size for i in range(_HASHES))

    def add(self, key: bytes) -> None:
        for position in self._positions(key):
            self.bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def __contains__(self, key: bytes) -> bool:
        bits = self.bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._positions(key))


def entry_key(tenant: str, address: str) -> bytes:
    """What the filter holds for a row of `suppressions` (its address as stored)."""
    return tenant.encode() + b"\0" + address.encode()


class SuppressionFilter:
    """The suppression list of every tenant as a Bloom filter, kept in step with the
    database by LISTEN/NOTIFY on a connection of its own."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._current: BloomFilter | None = None
        """None: not in step with the database; every look-up goes there."""
        self._loading: BloomFilter | None = None
        self._removed = False
        """Whether entries were removed from the list since the filter was read."""

    @property
    def ready(self) -> bool:
        return self._current is not None

    def surely_absent(self, tenant: str, addresses: Iterable[str]) -> bool:
        """True only when none of `addresses` (a recipient, and its keyed hash where the
        deployment has a secret) can be on `tenant`'s list; False means "ask the
        database"."""
        current = self._current
        if current is None:
            return False
        for address in addresses:
            if not address.isascii() or entry_key(tenant, address.lower()) in current:
                return False
        return True

    def _notified(self, tenant: str, address: str) -> None:
        key = entry_key(tenant, address)
        for bloom in (self._current, self._loading):
            if bloom is not None:
                bloom.add(key)
        if self._current is not None:
            metrics.SUPPRESSION_FILTER_ENTRIES.set(self._current.count)

    def _notified_removal(self) -> None:
        self._removed = True

    def _out_of_step(self, why: str | None) -> None:
        if self._current is not None and why:
            log.warning("suppression filter: %s; RCPT asks the database", why)
        self._current = None
        metrics.SUPPRESSION_FILTER_ENTRIES.set(-1)

    async def run(self) -> None:
        """Keep the filter in step until cancelled; reconnect whenever the connection is
        lost (meanwhile, and until the list is read again, every RCPT asks the database)."""
        while True:
            try:
                if not await self._follow():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: out of step, wait, start again
                self._out_of_step(f"connection failed ({exc!r})")
            await asyncio.sleep(_RETRY_SECONDS)

    async def _follow(self) -> bool:
        """Follow the list on one connection until it is lost; False if the filter cannot
        be used with this database."""
        feed = await SuppressionFeed.connect(self.dsn, lambda: self._out_of_step("connection lost"))
        try:
            if not await feed.lowers_ascii_as_python():
                log.warning(
                    "suppression filter off: the database lower-cases ASCII differently; "
                    "every RCPT asks the database"
                )
                return False
            await feed.listen(self._notified, self._notified_removal)
            await self._load(feed)
            loop = asyncio.get_running_loop()
            loaded_at = loop.time()
            while not feed.is_closed():
                await asyncio.sleep(_CHECK_SECONDS)
                await feed.ping()
                current = self._current
                if current is None or current.count > current.capacity:
                    await self._load(feed)  # full: a bigger one, as false positives grow
                    loaded_at = loop.time()
                elif self._removed and loop.time() - loaded_at > _RELOAD_SECONDS:
                    await self._load(feed)  # let removed entries go
                    loaded_at = loop.time()
            return True
        finally:
            self._out_of_step(None)
            await feed.close()

    async def _load(self, feed: SuppressionFeed) -> None:
        """Read the whole list into a new filter; notifications that arrive meanwhile go
        into both the filter in use (if any) and the new one, so neither misses them."""
        started = asyncio.get_running_loop().time()
        bloom = BloomFilter(2 * await feed.count())
        self._loading = bloom
        self._removed = False  # what is removed from now on is not in the read, or is noticed
        try:
            async for tenant, address in feed.entries():
                bloom.add(entry_key(tenant, address))
        finally:
            self._loading = None
        self._current = bloom
        metrics.SUPPRESSION_FILTER_ENTRIES.set(bloom.count)
        log.info(
            "suppression filter loaded: %d entries in %.2f s",
            bloom.count,
            asyncio.get_running_loop().time() - started,
        )
