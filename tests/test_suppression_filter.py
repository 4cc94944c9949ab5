"""P-SUPPRESS's in-memory filter: never says "not on the list" of an address that is, stays
in step with the database through LISTEN/NOTIFY, and steps aside while it cannot be."""

import asyncio
import random
from collections.abc import Callable

import asyncpg
import pytest

from relay.policy.suppression_filter import BloomFilter, SuppressionFilter
from relay.queue.sql import QUERIES
from relay.queue.suppressions import APPLICATION


def test_a_bloom_filter_holds_what_was_added_and_little_else() -> None:
    bloom = BloomFilter(100_000)
    members = [f"acme\0user{i}@inbox.example".encode() for i in range(bloom.capacity)]
    for key in members:
        bloom.add(key)
    assert all(key in bloom for key in members)
    strangers = [f"acme\0other{i}@inbox.example".encode() for i in range(20_000)]
    false_positives = sum(key in bloom for key in strangers)
    assert 0 < false_positives < len(strangers) * 0.015  # about 0.8% when full


async def _until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"no {what} after {within} s"
        await asyncio.sleep(0.01)


async def _suppress(pool: asyncpg.Pool, tenant: str, address: str) -> None:
    await pool.fetch(QUERIES["suppression_add"], tenant, [address], "manual", "test")


@pytest.mark.queue
@pytest.mark.asyncio
async def test_the_filter_follows_the_list_and_steps_aside_when_cut_off(
    pool: asyncpg.Pool, database: str
) -> None:
    await _suppress(pool, "acme", "Before@Inbox.Example")
    known = SuppressionFilter(database)
    assert not known.surely_absent("acme", ["anyone@inbox.example"])  # not read yet
    task = asyncio.create_task(known.run())
    try:
        await _until(lambda: known.ready, "the first read")
        assert not known.surely_absent("acme", ["before@inbox.example"])
        assert not known.surely_absent("acme", ["BEFORE@inbox.example"])
        assert known.surely_absent("printer", ["before@inbox.example"])  # per tenant
        assert known.surely_absent("acme", ["alice@inbox.example"])
        assert not known.surely_absent("acme", ["jörg@inbox.example"])  # not ASCII: ask
        assert not known.surely_absent("acme", ["alice@inbox.example", "before@inbox.example"])

        await _suppress(pool, "acme", "Later@Inbox.Example")  # notified at its commit
        await _until(lambda: not known.surely_absent("acme", ["later@inbox.example"]), "NOTIFY")

        # its connection killed: out of step at once (asyncpg reports the loss), so every
        # RCPT asks the database until the list has been read again on a new connection
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            APPLICATION,
        )
        assert killed == 1
        await _until(lambda: not known.ready, "the lost connection", within=2)
        assert not known.surely_absent("acme", ["alice@inbox.example"])
        await _suppress(pool, "acme", "meanwhile@inbox.example")  # nobody listening
        await _until(lambda: known.ready, "the read after reconnecting")
        assert not known.surely_absent("acme", ["meanwhile@inbox.example"])
        assert known.surely_absent("acme", ["alice@inbox.example"])

        # an erasure turns the address into its keyed hash: an UPDATE, notified too
        await pool.execute(
            "UPDATE suppressions SET address = 'hmac:00ff' WHERE address = 'later@inbox.example'"
        )
        await _until(lambda: not known.surely_absent("acme", ["hmac:00ff"]), "NOTIFY of UPDATE")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.queue
@pytest.mark.asyncio
async def test_a_list_larger_than_the_first_read_is_read_again(
    pool: asyncpg.Pool, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Additions past the filter's room make it read the list into a bigger one, so its
    false positives stay few; meanwhile the old one still answers."""
    monkeypatch.setattr("relay.policy.suppression_filter._MIN_CAPACITY", 10)
    monkeypatch.setattr("relay.policy.suppression_filter._CHECK_SECONDS", 0.1)
    known = SuppressionFilter(database)
    task = asyncio.create_task(known.run())
    try:
        await _until(lambda: known.ready, "the first read")
        first = known._current
        assert first is not None and first.capacity == 10
        addresses = [f"u{i}-{random.randrange(10**9)}@inbox.example" for i in range(25)]
        for address in addresses:
            await _suppress(pool, "acme", address)
        await _until(lambda: known._current is not first, "the second read")
        assert known._current is not None and known._current.capacity > first.capacity
        assert not any(known.surely_absent("acme", [a]) for a in addresses)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.queue
@pytest.mark.asyncio
async def test_the_list_is_read_again_only_once_entries_were_removed(
    pool: asyncpg.Pool, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list that only grows is followed from its notifications and never read again;
    once an entry is removed, the next read (at most every _RELOAD_SECONDS) lets it go."""
    monkeypatch.setattr("relay.policy.suppression_filter._CHECK_SECONDS", 0.05)
    monkeypatch.setattr("relay.policy.suppression_filter._RELOAD_SECONDS", 0.2)
    await _suppress(pool, "acme", "gone@inbox.example")
    known = SuppressionFilter(database)
    task = asyncio.create_task(known.run())
    try:
        await _until(lambda: known.ready, "the first read")
        first = known._current
        await _suppress(pool, "acme", "added@inbox.example")
        await asyncio.sleep(1.0)  # five reload periods
        assert known._current is first  # additions came by NOTIFY; nothing read again
        assert not known.surely_absent("acme", ["added@inbox.example"])
        await pool.execute("DELETE FROM suppressions WHERE address = 'gone@inbox.example'")
        await _until(lambda: known._current is not first, "the read after a removal")
        assert known.surely_absent("acme", ["gone@inbox.example"])
        assert not known.surely_absent("acme", ["added@inbox.example"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
