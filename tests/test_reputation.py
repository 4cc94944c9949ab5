"""P-COMPLAINT and P-BOUNCE on a real PostgreSQL: rates in, throttles and suspensions out.

Rates rows are written directly (as the feedback events would add them), then a round of
the reputation task judges them: below the minimum volume nothing happens; above the
warning level the pace toward that provider is halved each round and recovers gradually;
above the limit the tenant's bulk sending is suspended, its queued bulk deliveries held
while its transactional ones stay leasable, until an admin resumes it.
"""

import uuid
from datetime import timedelta

import asyncpg
import pydantic
import pytest
from prometheus_client import REGISTRY

from relay.config.schema import ReputationSection
from relay.feedback.reputation.judge import evaluate
from relay.feedback.reputation.standing import Standing
from relay.feedback.reputation.tenant_standing import resume, suspend
from relay.policy.context import PolicyContext
from relay.policy.lookups import DatabaseLookups
from relay.policy.pipeline import Pipeline, refusal
from relay.policy.verdict import Outcome
from relay.queue.store import NewMessage, insert_messages
from tests.support.messages import BULK_TENANT, newsletter

pytestmark = pytest.mark.queue

SETTINGS = ReputationSection(min_volume=1000)


async def _rates(
    pool: asyncpg.Pool,
    tenant: str,
    provider: str,
    delivered: int = 0,
    hard_bounced: int = 0,
    complained: int = 0,
    hours_ago: int = 0,
) -> None:
    await pool.execute(
        "INSERT INTO rates AS r (tenant, site, bucket, delivered, hard_bounced, complained)"
        " VALUES ($1, $2, date_trunc('hour', now()) - make_interval(hours => $3), $4, $5, $6)"
        " ON CONFLICT (tenant, site, campaign, bucket) DO UPDATE"
        " SET delivered = r.delivered + excluded.delivered,"
        " hard_bounced = r.hard_bounced + excluded.hard_bounced,"
        " complained = r.complained + excluded.complained",
        tenant, provider, hours_ago, delivered, hard_bounced, complained,
    )  # fmt: skip


@pytest.fixture
def standing(pool: asyncpg.Pool) -> Standing:
    """The process's copy of the verdicts, as the delivery worker and the DATA check read it."""
    return Standing(pool)


async def _round(
    pool: asyncpg.Pool, standing: Standing, settings: ReputationSection = SETTINGS
) -> None:
    assert await evaluate(pool, settings, min_gap=0) is not None
    await standing.refresh()


async def _open(pool: asyncpg.Pool, tenant: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT rule, reason FROM tenant_suspensions WHERE tenant = $1 AND resumed_at IS NULL",
        tenant,
    )
    return [(r["rule"], r["reason"]) for r in rows]


async def _queue(pool: asyncpg.Pool, tenant: str, bulk: bool, *recipients: str) -> uuid.UUID:
    message = NewMessage(
        tenant=tenant,
        mail_from=f"app@{tenant}.example",
        recipients=recipients,
        content=b"Subject: x\r\n\r\nx\r\n",
        bulk=bulk,
    )
    async with pool.acquire() as conn, conn.transaction():
        await insert_messages(conn, [message], 3600)
    return message.id


async def _holds(pool: asyncpg.Pool) -> dict[str, str | None]:
    rows = await pool.fetch("SELECT recipient, hold FROM deliveries ORDER BY id")
    return {r["recipient"]: r["hold"] for r in rows}


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# (delivered, hard bounced, complained, hours ago) -> (pace factor, suspension rule)
THRESHOLDS = {
    "below the minimum volume, whatever the rate": ((999, 0, 500, 0), (1.0, None)),
    "clean": ((10_000, 50, 2, 0), (1.0, None)),
    "complaints at the warning level, not above": ((1000, 0, 1, 0), (1.0, None)),
    "complaints above the warning level": ((1000, 0, 2, 0), (0.5, None)),
    "complaints above the limit": ((1000, 0, 4, 0), (0.5, "P-COMPLAINT")),
    "complaints older than the window": ((1000, 0, 50, 24 * 8), (1.0, None)),
    "hard bounces above the warning level": ((1000, 60, 0, 0), (0.5, None)),
    "hard bounces above the limit": ((900, 150, 0, 0), (0.5, "P-BOUNCE")),
    "a harvested list: nothing delivered": ((0, 1000, 0, 0), (0.5, "P-BOUNCE")),
}


@pytest.mark.parametrize("case", THRESHOLDS)
@pytest.mark.asyncio
async def test_thresholds(pool: asyncpg.Pool, case: str, standing: Standing) -> None:
    (delivered, bounced, complained, hours_ago), (factor, rule) = THRESHOLDS[case]
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await _rates(pool, tenant, "gmail.com", delivered, bounced, complained, hours_ago)
    await _round(pool, standing)
    assert standing.throttle_factor(tenant, "gmail.com") == factor
    assert [r for r, _ in await _open(pool, tenant)] == ([rule] if rule else [])


@pytest.mark.asyncio
async def test_pace_is_cut_per_provider_and_recovers_gradually(
    pool: asyncpg.Pool, standing: Standing
) -> None:
    """Complaints at one provider cut the pace toward it alone, halving each round down to
    the floor; once the rate there is below the warning level it comes back step by step."""
    await _rates(pool, "acme", "gmail.com", delivered=1000, complained=2)  # 0.2%
    await _rates(pool, "acme", "outlook.com", delivered=5000)
    factors = []
    for _ in range(5):
        await _round(pool, standing)
        factors.append(standing.throttle_factor("acme", "gmail.com"))
    assert factors == [0.5, 0.25, 0.125, 0.0625, 0.0625]
    assert standing.throttle_factor("acme", "outlook.com") == 1.0
    assert _gauge("relay_tenant_throttle_factor", tenant="acme", site="gmail.com") == 0.0625
    (row,) = await pool.fetch("SELECT rule, reason FROM tenant_throttles")
    assert row["rule"] == "P-COMPLAINT"
    assert row["reason"] == "complaint rate 0.20% over 7 days (warning level 0.1%)"
    assert await _open(pool, "acme") == []  # 2 of 6000 over all its traffic: no suspension

    await _rates(pool, "acme", "gmail.com", delivered=9000)  # 2 of 10,000: 0.02%
    factors = []
    while standing.throttle_factor("acme", "gmail.com") < 1.0:
        await _round(pool, standing)
        factors.append(standing.throttle_factor("acme", "gmail.com"))
    assert factors == [0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375, 1.0]
    assert await pool.fetchval("SELECT count(*) FROM tenant_throttles") == 0
    assert _gauge("relay_tenant_throttle_factor", tenant="acme", site="gmail.com") == 1.0
    events = await pool.fetch(
        "SELECT site, detail->>'factor' AS factor FROM events WHERE kind = 'throttled' ORDER BY id"
    )
    assert [(e["site"], float(e["factor"])) for e in events] == [
        ("gmail.com", 0.5), ("gmail.com", 0.25), ("gmail.com", 0.125), ("gmail.com", 0.0625),
        ("gmail.com", 1.0),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_one_round_per_interval_however_many_processes(
    pool: asyncpg.Pool, standing: Standing
) -> None:
    """Several relay processes share a database: a round that comes too soon after
    another does nothing, so a factor is halved once per interval."""
    await _rates(pool, "acme", "gmail.com", delivered=1000, complained=2)
    settings = ReputationSection(min_volume=1000, check_every=60)
    assert await evaluate(pool, settings) is not None
    assert await evaluate(pool, settings) is None
    await standing.refresh()
    assert standing.throttle_factor("acme", "gmail.com") == 0.5


@pytest.mark.asyncio
async def test_suspension_holds_bulk_and_lets_transactional_mail_flow(
    pool: asyncpg.Pool, standing: Standing
) -> None:
    """Above the limit the tenant's queued bulk deliveries are held, its transactional
    ones and other tenants' mail stay leasable; the suspension is sticky; an admin's
    resume releases the held mail and starts the tenant's record afresh."""
    tenant = "susp"
    await _queue(pool, tenant, True, "news1@inbox.example", "news2@inbox.example")
    await _queue(pool, tenant, False, "receipt@inbox.example")
    await _queue(pool, "other", True, "other@inbox.example")
    await _rates(pool, tenant, "gmail.com", delivered=1000, complained=5)  # 0.5%
    await pool.execute("UPDATE messages SET received_at = now() - interval '3 hours'")

    await _round(pool, standing)
    reason = "complaint rate 0.50% over 7 days (limit 0.3%)"
    assert await _open(pool, tenant) == [("P-COMPLAINT", reason)]
    assert await _holds(pool) == {
        "news1@inbox.example": "P-COMPLAINT",
        "news2@inbox.example": "P-COMPLAINT",
        "receipt@inbox.example": None,
        "other@inbox.example": None,
    }
    (event,) = await pool.fetch("SELECT detail FROM events WHERE kind = 'suspended'")
    assert '"held": 2' in event["detail"] and reason in event["detail"]
    assert _gauge("relay_tenant_suspended", tenant=tenant, rule="P-COMPLAINT") == 1.0

    await _rates(pool, tenant, "gmail.com", delivered=100_000)  # the rate falls to 0.005%
    await _queue(pool, tenant, True, "late@inbox.example")  # accepted before the SMTP path knew
    await _round(pool, standing)
    assert await _open(pool, tenant) == [("P-COMPLAINT", reason)]  # sticky
    assert (await _holds(pool))["late@inbox.example"] == "P-COMPLAINT"

    await pool.execute("UPDATE tenant_suspensions SET since = now() - interval '2 hours'")
    before = {
        r["recipient"]: r["expires_at"]
        for r in await pool.fetch("SELECT recipient, expires_at FROM deliveries")
    }
    resumed = await resume(pool, tenant, "ops")
    assert [s.rule for s in resumed.suspensions] == ["P-COMPLAINT"] and resumed.released == 3
    assert set((await _holds(pool)).values()) == {None}
    after = await pool.fetch("SELECT recipient, expires_at, next_attempt_at <= now() AS due"
                             " FROM deliveries")  # fmt: skip
    for row in after:
        added = row["expires_at"] - before[row["recipient"]]
        if row["recipient"] in ("news1@inbox.example", "news2@inbox.example"):
            assert abs(added - timedelta(hours=2)) < timedelta(minutes=1), added
            assert row["due"]
        elif row["recipient"] == "late@inbox.example":  # held only since it arrived
            assert timedelta(0) <= added < timedelta(minutes=1)
        else:
            assert added == timedelta(0)
    (row,) = await pool.fetch("SELECT resumed_by, resumed_at FROM tenant_suspensions")
    assert row["resumed_by"] == "ops" and row["resumed_at"] is not None
    (event,) = await pool.fetch("SELECT detail FROM events WHERE kind = 'resumed'")
    assert '"released": 3' in event["detail"] and '"by": "ops"' in event["detail"]

    await _round(pool, standing)  # the complaints from before the resume no longer count
    assert await _open(pool, tenant) == []
    assert _gauge("relay_tenant_suspended", tenant=tenant, rule="P-COMPLAINT") == 0.0
    await _rates(pool, tenant, "gmail.com", delivered=1000, hard_bounced=200, hours_ago=-1)
    await _round(pool, standing)  # what it sends after the resume does
    assert [r for r, _ in await _open(pool, tenant)] == ["P-BOUNCE"]


def _context(lookups: DatabaseLookups | None, raw: bytes, tenant: str = "acme") -> PolicyContext:
    section = BULK_TENANT.model_copy(update={"name": tenant, "stream": "mixed"})
    return PolicyContext(
        section,
        "news@acme.example",
        ["alice@inbox.example"],
        raw,
        lookups,
    )


BULK = b"List-Id: <news.acme.example>\r\n" + newsletter()
TRANSACTIONAL = b"From: a@acme.example\r\nSubject: receipt\r\nDate: x\r\n\r\nThanks.\r\n"


@pytest.mark.asyncio
async def test_bulk_of_a_suspended_tenant_is_refused_at_data(
    pool: asyncpg.Pool, standing: Standing
) -> None:
    """The DATA check refuses bulk mail with the rule and the measured rate; transactional
    mail passes; other tenants are not affected; offline the check skips."""
    await _rates(pool, "acme", "gmail.com", delivered=1000, complained=5)
    await _round(pool, standing)
    pipeline = Pipeline()
    refused = refusal(await pipeline.run("data", _context(DatabaseLookups(pool, standing), BULK)))
    assert refused is not None and refused.reply() == (
        "550 5.7.1 [P-COMPLAINT] tenant acme's bulk sending is suspended: complaint rate 0.50%"
        " over 7 days (limit 0.3%); an admin resumes it with relay tenant resume"
    )
    verdicts = await pipeline.run(
        "data", _context(DatabaseLookups(pool, standing), TRANSACTIONAL), stop_at_refusal=False
    )
    outcomes = {v.rule: v.outcome for v in verdicts}
    assert outcomes["P-COMPLAINT"] is Outcome.SKIP and outcomes["P-BOUNCE"] is Outcome.SKIP
    other = await pipeline.run(
        "data", _context(DatabaseLookups(pool, standing), BULK, "beta"), stop_at_refusal=False
    )
    assert {v.rule: v.outcome for v in other}["P-COMPLAINT"] is Outcome.PASS
    offline = await pipeline.run("data", _context(None, BULK), stop_at_refusal=False)
    assert {v.rule: v.outcome for v in offline}["P-COMPLAINT"] is Outcome.SKIP


@pytest.mark.asyncio
async def test_an_admin_suspends_bulk_by_hand(pool: asyncpg.Pool, standing: Standing) -> None:
    """P-SUSPEND by hand: bulk is held and refused with the admin's reason until resumed."""
    await _queue(pool, "acme", True, "news@inbox.example")
    await _queue(pool, "acme", False, "receipt@inbox.example")
    assert await suspend(pool, "acme", "unpaid invoices", "ops") == (True, 1)
    assert await suspend(pool, "acme", "unpaid invoices", "ops") == (False, 0)
    assert await _holds(pool) == {
        "news@inbox.example": "manual-suspension",
        "receipt@inbox.example": None,
    }
    await standing.refresh()
    refused = refusal(await Pipeline().run("data", _context(DatabaseLookups(pool, standing), BULK)))
    assert refused is not None and refused.reply() == (
        "550 5.7.1 [P-SUSPEND] tenant acme's bulk sending is suspended by an admin: unpaid invoices"
    )
    assert (await resume(pool, "acme", "ops")).released == 1
    await standing.refresh()
    assert (
        refusal(await Pipeline().run("data", _context(DatabaseLookups(pool, standing), BULK)))
        is None
    )


@pytest.mark.parametrize(("value", "expected"), [("0.3%", 0.003), (0.003, 0.003), (" 5 % ", 0.05)])
def test_rates_are_fractions_or_percentages(value: object, expected: float) -> None:
    assert ReputationSection(complaint_limit=value).complaint_limit == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "values",
    [{"complaint_warn": "0.3%", "complaint_limit": "0.1%"}, {"bounce_limit": "150%"},
     {"bounce_warn": "five%"}],
)  # fmt: skip
def test_nonsense_rates_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ReputationSection(**values)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_an_outage_defers_bulk_citing_the_rule(database: str) -> None:
    """With the database gone before the first read of the suspensions, the check defers
    the message (451 4.3.0) naming what it could not read, instead of passing it unjudged."""
    pool = await asyncpg.create_pool(database, min_size=0, max_size=1)
    await pool.close()
    lookups = DatabaseLookups(pool, Standing(pool))
    verdicts = await Pipeline().run("data", _context(lookups, BULK), stop_at_refusal=False)
    (deferred,) = [v for v in verdicts if v.rule == "P-COMPLAINT"]
    assert deferred.outcome is Outcome.TEMPFAIL
    assert deferred.reply().startswith("451 4.3.0 [P-COMPLAINT] suspensions unavailable (")
