"""Unit tests of delivery decisions: outcome classification, backoff, connection chunks."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from relay.delivery.outcome import Bounce, Delivered, Reply, Retry, RetryPolicy, decide
from relay.delivery.worker import _per_connection
from relay.queue.deliveries import Lease

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(initial=60, maximum=3600)


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (Reply(250, "2.0.0 OK queued"), Delivered, None),
        (Reply(451, "4.7.1 greylisted"), Retry, None),
        (Reply(421, "try later"), Retry, None),
        (Reply(550, "5.1.1 no such user"), Bounce, "5.1.1"),
        (Reply(554, "rejected"), Bounce, "5.0.0"),
        (Reply(552, "4.2.2 mailbox full"), Bounce, "5.0.0"),  # class mismatch: use the reply's
    ],
)
def test_reply_classes(reply: Reply, kind: type, status: str | None) -> None:
    """RFC 5321 4.2.1: 2yz done, 4yz retry, 5yz never; status from RFC 3463 text if it fits."""
    outcome = decide(reply, attempts=1, expires_at=NOW + timedelta(days=5), now=NOW, policy=POLICY)
    assert isinstance(outcome, kind)
    if status:
        assert isinstance(outcome, Bounce) and outcome.status == status


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    for attempts, base in [(1, 60), (2, 120), (3, 240), (10, 3600)]:
        delay = POLICY.delay(attempts)
        assert 0.8 * base <= delay <= 1.2 * base


def test_temporary_failure_after_the_queue_lifetime_bounces() -> None:
    """Postfix's maximal_queue_lifetime: expired mail bounces with 4.4.7 (RFC 3463)."""
    outcome = decide(
        Reply(451, "4.4.1 no answer"), attempts=9, expires_at=NOW, now=NOW, policy=POLICY
    )
    assert isinstance(outcome, Bounce) and outcome.status == "4.4.7"


def test_retry_never_goes_past_expiry() -> None:
    expires = NOW + timedelta(seconds=10)
    outcome = decide(Reply(451, "later"), attempts=5, expires_at=expires, now=NOW, policy=POLICY)
    assert isinstance(outcome, Retry) and outcome.at == expires


def _lease(message: uuid.UUID, recipient: str) -> Lease:
    return Lease(1, uuid.uuid4(), message, recipient, "x.example", 0, NOW, "acme", "a@b", NOW, None)


def test_connection_chunks_keep_a_message_together() -> None:
    """Recipients of one message share a transaction, so never straddle two connections."""
    messages = [uuid.UUID(int=i) for i in range(5)]
    leases = [_lease(m, f"r{j}@x.example") for m in messages for j in range(3)]
    chunks = list(_per_connection(leases, per_connection=2))
    assert [len({x.message_id for x in c}) for c in chunks] == [2, 2, 1]
    assert sum(len(c) for c in chunks) == 15
