"""P-CANARY on a real PostgreSQL: campaigns held as they are queued, the canary, the window's
verdict, and the admin's release or decline.

Time is moved by back-dating rows (a message's arrival, a campaign's start or window end),
not by sleeping, so each step happens exactly when the test says.
"""

import json
import uuid

import asyncpg
import pytest
from prometheus_client import REGISTRY

from relay.config.schema import CanarySection
from relay.feedback.reputation import canary
from relay.feedback.reputation.canary import CampaignError, Rates, canary_size, judge
from relay.queue.store import NewMessage, insert_messages

pytestmark = [pytest.mark.queue, pytest.mark.asyncio]

SPRING = "<spring.acme.example>"
ON = CanarySection(enabled=True, min_size=2000)


async def _submit(
    pool: asyncpg.Pool,
    recipients: int,
    *,
    campaign: str | None = SPRING,
    bulk: bool = True,
    tenant: str = "acme",
    per_message: int = 100,
) -> list[uuid.UUID]:
    """Queue a campaign of `recipients` (messages of up to `per_message`) in one commit."""
    messages = [
        NewMessage(
            tenant=tenant,
            mail_from=f"news@{tenant}.example",
            recipients=tuple(
                f"r{n}@inbox.example" for n in range(start, min(start + per_message, recipients))
            ),
            content=b"Subject: news\r\n\r\nnews\r\n",
            campaign=campaign,
            bulk=bulk,
        )
        for start in range(0, recipients, per_message)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await insert_messages(conn, messages, 3600)
    return [m.id for m in messages]


async def _holds(pool: asyncpg.Pool, tenant: str = "acme") -> dict[str | None, int]:
    rows = await pool.fetch(
        "SELECT d.hold, count(*) AS n FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE m.tenant = $1 AND d.state = 'queued' GROUP BY d.hold",
        tenant,
    )
    return {r["hold"]: r["n"] for r in rows}


async def _campaign(pool: asyncpg.Pool, tenant: str = "acme") -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT * FROM campaigns WHERE tenant = $1 AND campaign = $2", tenant, SPRING
    )


async def _settled(pool: asyncpg.Pool) -> None:
    """As if the last message of every campaign arrived two minutes ago."""
    await pool.execute("UPDATE messages SET received_at = received_at - interval '2 minutes'")


async def _window_over(pool: asyncpg.Pool) -> None:
    await pool.execute("UPDATE campaigns SET window_ends = now() - interval '1 second'")


async def _rates(pool: asyncpg.Pool, **counts: int) -> None:
    columns = ", ".join(counts)
    values = ", ".join(str(v) for v in counts.values())
    await pool.execute(
        f"INSERT INTO rates (tenant, site, campaign, bucket, {columns})"
        f" VALUES ('acme', 'inbox.example', $1, date_trunc('hour', now()), {values})",
        SPRING,
    )


async def _events(pool: asyncpg.Pool, kind: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM events WHERE kind = $1 ORDER BY id", kind)


async def _canary_of_300(pool: asyncpg.Pool) -> None:
    """A campaign of 300 recipients with min_size 100: 30 sent, 270 held."""
    settings = CanarySection(enabled=True, min_size=100)
    await canary.write_settings(pool, settings)
    await _submit(pool, 300)
    await _settled(pool)
    await canary.check_once(pool, settings)
    assert await _holds(pool) == {None: 30, f"canary:{SPRING}": 270}


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# -- the hold at submission --------------------------------------------------------------------


async def test_new_campaign_deliveries_are_held_as_they_are_queued(pool: asyncpg.Pool) -> None:
    """Bulk mail with a campaign is held in the enqueue transaction itself; transactional
    mail and bulk mail without a campaign are not."""
    await canary.write_settings(pool, ON)
    await _submit(pool, 3)
    await _submit(pool, 2, campaign=None)
    await _submit(pool, 2, campaign="<receipts.acme.example>", bulk=False)
    assert await _holds(pool) == {f"canary-pending:{SPRING}": 3, None: 4}
    row = await _campaign(pool)
    assert row["state"] == "collecting"


async def test_nothing_is_held_when_canaries_are_off_or_the_tenant_is_exempt(
    pool: asyncpg.Pool,
) -> None:
    await _submit(pool, 3)  # no settings written yet: off
    await canary.write_settings(pool, CanarySection(enabled=False))
    await _submit(pool, 3)
    await canary.write_settings(pool, CanarySection(enabled=True, exempt_tenants=["acme"]))
    await _submit(pool, 3)
    assert await _holds(pool) == {None: 9}
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


# -- collecting --------------------------------------------------------------------------------


async def test_a_small_campaign_is_released_whole_once_it_settles(pool: asyncpg.Pool) -> None:
    await canary.write_settings(pool, ON)
    await _submit(pool, 300)
    await _submit(pool, 5, tenant="beta")  # the same List-Id at another tenant
    await canary.check_once(pool, ON)
    assert await _holds(pool) == {f"canary-pending:{SPRING}": 300}
    assert (await _campaign(pool))["recipients"] == 300
    assert _gauge("relay_campaign_held_deliveries", tenant="acme") == 300

    await pool.execute(
        "UPDATE messages SET received_at = received_at - interval '2 minutes' WHERE tenant = 'acme'"
    )
    before = await pool.fetchval("SELECT min(expires_at) FROM deliveries")
    await canary.check_once(pool, ON)
    assert await _holds(pool) == {None: 300}
    row = await _campaign(pool)
    assert row["state"] == "released" and row["decided_by"] == "canary"
    assert "below min_size 2000" in row["reason"]
    # waiting did not eat the queue lifetime, and the deliveries are due now
    after = await pool.fetchval(
        "SELECT min(expires_at) FROM deliveries WHERE tenant = 'acme' AND next_attempt_at <= now()"
    )
    assert after > before
    assert await _holds(pool, "beta") == {f"canary-pending:{SPRING}": 5}  # still growing
    assert _gauge("relay_campaign_held_deliveries", tenant="acme") is None


async def test_a_campaign_of_5000_sends_500_and_holds_4500(pool: asyncpg.Pool) -> None:
    await canary.write_settings(pool, ON)
    await _submit(pool, 5000)
    await _settled(pool)
    await canary.check_once(pool, ON)
    assert await _holds(pool) == {None: 500, f"canary:{SPRING}": 4500}
    first = await pool.fetch("SELECT id FROM deliveries WHERE hold IS NULL ORDER BY id")
    all_ids = await pool.fetch("SELECT id FROM deliveries ORDER BY id LIMIT 500")
    assert first == all_ids  # the first 10%, in the order they were submitted
    row = await _campaign(pool)
    counts = (row["recipients"], row["canary_size"], row["held"])
    assert row["state"] == "canary" and counts == (5000, 500, 4500)
    hours = await pool.fetchval("SELECT extract(epoch FROM $1 - now()) / 3600", row["window_ends"])
    assert 5.9 < hours <= 6
    (event,) = await _events(pool, "canary-held")
    assert json.loads(event["detail"])["held"] == 4500 and event["campaign"] == SPRING
    assert _gauge("relay_campaigns", state="canary") == 1
    assert _gauge("relay_campaign_held_deliveries", tenant="acme") == 4500


async def test_a_large_campaign_caps_its_canary_at_max_canary(pool: asyncpg.Pool) -> None:
    settings = CanarySection(enabled=True, min_size=100, max_canary=40)
    await canary.write_settings(pool, settings)
    await _submit(pool, 1000)
    await _settled(pool)
    await canary.check_once(pool, settings)
    assert await _holds(pool) == {None: 40, f"canary:{SPRING}": 960}


async def test_a_campaign_that_never_pauses_is_decided_after_max_collect(
    pool: asyncpg.Pool,
) -> None:
    settings = CanarySection(enabled=True, min_size=100)
    await canary.write_settings(pool, settings)
    await _submit(pool, 300)
    await canary.check_once(pool, settings)
    assert (await _campaign(pool))["state"] == "collecting"
    await pool.execute("UPDATE campaigns SET started_at = now() - interval '31 minutes'")
    await canary.check_once(pool, settings)
    assert await _holds(pool) == {None: 30, f"canary:{SPRING}": 270}


async def test_late_arrivals_join_the_held_rest(pool: asyncpg.Pool) -> None:
    await _canary_of_300(pool)
    await _submit(pool, 20)
    await canary.check_once(pool, CanarySection(enabled=True, min_size=100))
    assert await _holds(pool) == {None: 30, f"canary:{SPRING}": 290}
    row = await _campaign(pool)
    assert (row["recipients"], row["held"]) == (320, 290)


async def test_turning_canaries_off_releases_collecting_campaigns(pool: asyncpg.Pool) -> None:
    await canary.write_settings(pool, ON)
    await _submit(pool, 50)
    off = CanarySection(enabled=False)
    await canary.write_settings(pool, off)
    await canary.check_once(pool, off)
    assert await _holds(pool) == {None: 50}
    assert "canaries are off" in (await _campaign(pool))["reason"]


# -- the window's verdict ----------------------------------------------------------------------


async def test_a_clean_canary_releases_the_rest_at_the_window_end(pool: asyncpg.Pool) -> None:
    await _canary_of_300(pool)
    settings = CanarySection(enabled=True, min_size=100)
    await _rates(pool, delivered=30)
    await canary.check_once(pool, settings)
    assert (await _campaign(pool))["state"] == "canary"  # the window is still open

    held_expiry = await pool.fetchval("SELECT min(expires_at) FROM deliveries WHERE hold LIKE 'c%'")
    await _window_over(pool)
    await canary.check_once(pool, settings)
    assert await _holds(pool) == {None: 300}
    row = await _campaign(pool)
    assert (row["state"], row["decided_by"], row["held"]) == ("released", "canary", 0)
    (event,) = await _events(pool, "canary-released")
    detail = json.loads(event["detail"])
    assert detail["released"] == 270 and detail["rates"]["delivered"] == 30
    assert await pool.fetchval("SELECT min(expires_at) FROM deliveries") > held_expiry


@pytest.mark.parametrize(
    ("counts", "problem"),
    [
        (dict(delivered=30, complained=1), "complaint rate 3.33% (1 of 30) is above 0.10%"),
        (dict(delivered=27, hard_bounced=3), "hard-bounce rate 10.00% (3 of 30) is above 5.00%"),
        (dict(delivered=30, unsubscribed=2), "unsubscribe rate 6.67% (2 of 30) is above 2.00%"),
        (dict(delivered=5, deferred=25), "only 5 of 30 canary deliveries finished"),
    ],
)
async def test_a_bad_canary_waits_for_an_admin(
    pool: asyncpg.Pool, counts: dict[str, int], problem: str
) -> None:
    await _canary_of_300(pool)
    await _rates(pool, **counts)
    await _window_over(pool)
    await canary.check_once(pool, CanarySection(enabled=True, min_size=100))
    assert await _holds(pool) == {None: 30, f"canary:{SPRING}": 270}
    row = await _campaign(pool)
    assert row["state"] == "waiting" and problem in row["reason"]
    (event,) = await _events(pool, "canary-waiting")
    assert problem in json.loads(event["detail"])["reason"]
    assert _gauge("relay_campaigns", state="waiting") == 1


async def test_judge_and_canary_size() -> None:
    """The first 10% (rounded up), at most max_canary; rates over their own bases."""
    assert [canary_size(n, 1000) for n in (5000, 300, 2001, 20_000)] == [500, 30, 201, 1000]
    assert judge(Rates(delivered=500), 500, ON) is None
    assert judge(Rates(delivered=1000, complained=1), 1000, ON) is None  # 0.1% is not above
    assert judge(Rates(delivered=1000, complained=2), 1000, ON) is not None
    assert judge(Rates(delivered=0, hard_bounced=0, deferred=500), 500, ON) is not None


# -- the admin's word --------------------------------------------------------------------------


async def test_release_sends_the_rest_now(pool: asyncpg.Pool) -> None:
    await _canary_of_300(pool)
    await _rates(pool, delivered=30, complained=3)
    await _window_over(pool)
    await canary.check_once(pool, CanarySection(enabled=True, min_size=100))
    assert (await _campaign(pool))["state"] == "waiting"

    assert await canary.release(pool, "acme", SPRING, "admin:ops") == 270
    assert await _holds(pool) == {None: 300}
    row = await _campaign(pool)
    assert (row["state"], row["decided_by"]) == ("released", "admin:ops")
    with pytest.raises(CampaignError, match="already released"):
        await canary.release(pool, "acme", SPRING, "admin:ops")
    with pytest.raises(CampaignError, match="no campaign"):
        await canary.release(pool, "acme", "<other.acme.example>", "admin:ops")


async def test_decline_ends_the_held_deliveries_with_an_event_each(pool: asyncpg.Pool) -> None:
    await _canary_of_300(pool)
    ended = await canary.decline(pool, "acme", SPRING, "admin:ops", "bought list")
    assert ended == 270
    assert await _holds(pool) == {None: 30}  # the canary, already out of our hands
    rows = await pool.fetch(
        "SELECT state, last_reply, count(*) AS n FROM deliveries WHERE state = 'deleted'"
        " GROUP BY 1, 2"
    )
    assert [tuple(r) for r in rows] == [("deleted", "declined by admin (P-CANARY)", 270)]
    events = await _events(pool, "canary-declined")
    assert len(events) == 270 and len({e["recipient"] for e in events}) == 270
    detail = json.loads(events[0]["detail"])
    assert detail == {"rule": "P-CANARY", "by": "admin:ops", "reason": "bought list"}
    row = await _campaign(pool)
    assert (row["state"], row["reason"]) == ("declined", "bought list")

    # more mail of the declined campaign is held, then declined the same way, never sent
    await _submit(pool, 4)
    assert (await _holds(pool))[f"canary-pending:{SPRING}"] == 4
    await canary.check_once(pool, CanarySection(enabled=True, min_size=100))
    assert await _holds(pool) == {None: 30}
    assert len(await _events(pool, "canary-declined")) == 274


async def test_a_decision_applies_to_stragglers_until_it_is_stale(pool: asyncpg.Pool) -> None:
    """Within `remember` more mail of a released campaign goes at once; later the same
    List-Id is a new send with its own canary."""
    await canary.write_settings(pool, ON)
    await _submit(pool, 10)
    await _settled(pool)
    await canary.check_once(pool, ON)
    await _submit(pool, 10)
    assert await _holds(pool) == {None: 20}

    await pool.execute("UPDATE campaigns SET decided_at = now() - interval '2 days'")
    await _submit(pool, 10)
    assert await _holds(pool) == {None: 20, f"canary-pending:{SPRING}": 10}
    row = await _campaign(pool)
    assert (row["state"], row["decided_at"]) == ("collecting", None)
