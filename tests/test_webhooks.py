"""Webhooks on a real PostgreSQL, posting to a real HTTP receiver on loopback, and
`relay events tail` against the same database.

The receiver checks every request the way a tenant should: the HMAC-SHA256 of
`timestamp + "." + body` with the shared secret, and a timestamp within five minutes.
"""

import asyncio
import contextlib
import hashlib
import hmac
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner
from prometheus_client import REGISTRY

from relay.cli import main
from relay.config.schema import Config, TenantSection
from relay.feedback.events.webhooks import (
    WebhookDispatcher,
    backoff,
    load_webhook_secret,
    targets_of,
)
from relay.public_address import PublicResolver
from relay.queue.events import Event, record
from relay.queue.migrate import migrate
from tests.support.peers import ROOT, RelayConfig

pytestmark = pytest.mark.queue

SECRET = b"s3cret-for-webhook-tests"


@dataclass
class Request:
    tenant: str
    ids: list[int]
    status: int
    payload: dict[str, Any]


@dataclass
class Receiver:
    """A tenant's webhook endpoint: verifies, records, answers from `script` then 200."""

    secret: bytes
    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    most_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Relay-Timestamp", "")
        expected = (
            "sha256="
            + hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        if not hmac.compare_digest(request.headers.get("X-Relay-Signature", ""), expected):
            self.refused.append("signature")
            return web.Response(status=401)
        if abs(time.time() - int(stamp)) > 300:
            self.refused.append("timestamp")
            return web.Response(status=401)
        if request.headers.get("Content-Type") != "application/json":
            self.refused.append("content-type")
            return web.Response(status=415)
        payload = json.loads(body)
        tenant = payload["tenant"]
        self.in_flight[tenant] += 1
        self.most_in_flight[tenant] = max(self.most_in_flight[tenant], self.in_flight[tenant])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight[tenant] -= 1
        status = self.script.pop(0) if self.script else 200
        ids = [e["id"] for e in payload["events"]]
        self.requests.append(Request(tenant, ids, status, payload))
        return web.Response(status=status)

    def accepted(self, tenant: str) -> list[int]:
        return [i for r in self.requests if r.tenant == tenant and r.status == 200 for i in r.ids]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver(SECRET)
    app = web.Application()
    app.router.add_post("/hook", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/hook"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook.secret"
    path.write_bytes(SECRET + b"\n")
    return path


def _config(hooks: dict[str, str], secret_file: Path, others: tuple[str, ...] = ()) -> Config:
    """Tenants in `hooks` post to their URL; tenants in `others` have no webhook."""
    tenants: list[dict[str, Any]] = [
        {
            "name": name,
            "domains": [f"{name}.example"],
            "networks": ["127.0.0.1/32"],
            "webhook_url": url,
            "webhook_secret_file": str(secret_file),
            "webhook_private": True,  # the receivers listen on loopback
        }
        for name, url in hooks.items()
    ]
    tenants += [
        {"name": name, "domains": [f"{name}.example"], "networks": ["127.0.0.1/32"]}
        for name in others
    ]
    return Config.model_validate(
        {
            "relay": {"hostname": "relay.test"},
            "listeners": [{"name": "submission", "address": "127.0.0.1:2587"}],
            "tenants": tenants,
        }
    )


def _events(tenant: str, count: int, provider: str = "inbox.example") -> list[Event]:
    return [
        Event(
            tenant,
            "delivered",
            recipient=f"r{n}@inbox.example",
            message_id=uuid.uuid4(),
            site=provider,
            campaign="spring",
            detail={"reply": "250 2.0.0 ok", "n": n},
        )
        for n in range(count)
    ]


async def _ids(pool: asyncpg.Pool, tenant: str) -> list[int]:
    rows = await pool.fetch("SELECT id FROM events WHERE tenant = $1 ORDER BY id", tenant)
    return [r["id"] for r in rows]


async def _cursor(pool: asyncpg.Pool, tenant: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM webhook_cursors WHERE tenant = $1", tenant)


async def _until(predicate: Callable[[], Any], within: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await _value(predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


@contextlib.asynccontextmanager
async def _running(*dispatchers: WebhookDispatcher) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(d.run()) for d in dispatchers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _cursor_at(pool: asyncpg.Pool, tenant: str, last: int) -> bool:
    row = await _cursor(pool, tenant)
    return row is not None and row["last_event"] == last


def _posts(tenant: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "relay_webhook_posts_total", {"tenant": tenant, "outcome": outcome}
    )
    return value or 0.0


# -- (a) order and signature -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_events_arrive_in_id_order_signed_and_batched(
    pool: asyncpg.Pool, receiver: Receiver, secret_file: Path
) -> None:
    """150 events: two signed requests (100, then 50), ids ascending, cursor at the last."""
    await record(pool, _events("acme", 150))
    ids = await _ids(pool, "acme")
    async with _running(WebhookDispatcher(pool, _config({"acme": receiver.url}, secret_file))):
        await _until(lambda: _cursor_at(pool, "acme", ids[-1]), what="the cursor at the end")
    assert receiver.refused == []
    assert [r.ids for r in receiver.requests] == [ids[:100], ids[100:]]
    first = receiver.requests[0].payload["events"][0]
    assert set(first) == {
        "id", "kind", "at", "message_id", "recipient", "site", "provider", "campaign", "detail"
    }  # fmt: skip
    assert first["kind"] == "delivered" and first["recipient"] == "r0@inbox.example"
    assert first["site"] == first["provider"] == "inbox.example" and first["campaign"] == "spring"
    assert first["detail"] == {"reply": "250 2.0.0 ok", "n": 0}
    assert datetime.fromisoformat(first["at"]).tzinfo is not None
    assert uuid.UUID(first["message_id"])


# -- (b) a failure is retried with the same batch ----------------------------------------------


@pytest.mark.asyncio
async def test_a_failed_batch_is_posted_again_until_acknowledged(
    pool: asyncpg.Pool, receiver: Receiver, secret_file: Path
) -> None:
    """500 first: the cursor stays, the error and a backoff are recorded, and the same three
    events come again (not more, though two arrived meanwhile); then the next two."""
    receiver.script = [500]
    failed_before = _posts("acme", "failed")
    await record(pool, _events("acme", 3))
    first = await _ids(pool, "acme")
    dispatcher = WebhookDispatcher(pool, _config({"acme": receiver.url}, secret_file))
    async with _running(dispatcher):

        async def failure_recorded() -> bool:
            row = await _cursor(pool, "acme")
            return row is not None and row["failures"] == 1

        await _until(failure_recorded, what="the failure recorded")
        row = await _cursor(pool, "acme")
        assert row is not None and row["last_event"] == 0
        assert row["last_error"] == "HTTP 500 Internal Server Error"
        await record(pool, _events("acme", 2))
        everything = await _ids(pool, "acme")
        await _until(lambda: _cursor_at(pool, "acme", everything[-1]), what="all acknowledged")
    assert [(r.ids, r.status) for r in receiver.requests] == [
        (first, 500),
        (first, 200),
        (everything[3:], 200),
    ]
    row = await _cursor(pool, "acme")
    assert row is not None and row["failures"] == 0 and row["last_error"] is None
    assert _posts("acme", "failed") == failed_before + 1


@pytest.mark.asyncio
async def test_a_receiver_that_cannot_be_reached_keeps_the_cursor(
    pool: asyncpg.Pool, secret_file: Path
) -> None:
    """A connection error is a failure like a 500: recorded, backed off, cursor kept."""
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    await record(pool, _events("acme", 2))
    async with _running(WebhookDispatcher(pool, _config({"acme": url}, secret_file))):

        async def failed() -> bool:
            row = await _cursor(pool, "acme")
            return row is not None and row["failures"] >= 1

        await _until(failed, what="the failure recorded")
    row = await _cursor(pool, "acme")
    assert row is not None and row["last_event"] == 0
    assert row["last_error"].startswith("ClientConnectorError")


# -- (c) no webhook, nothing posted ------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_tenant_without_webhook_url_gets_nothing_posted(
    pool: asyncpg.Pool, receiver: Receiver, secret_file: Path
) -> None:
    for _ in range(3):
        await record(pool, _events("printer", 2) + _events("acme", 2))
    acme = await _ids(pool, "acme")
    config = _config({"acme": receiver.url}, secret_file, others=("printer",))
    async with _running(WebhookDispatcher(pool, config)):
        await _until(lambda: _cursor_at(pool, "acme", acme[-1]), what="acme's events")
        await asyncio.sleep(1.5)  # a few more polls
    assert {r.tenant for r in receiver.requests} == {"acme"}
    assert receiver.accepted("acme") == acme
    assert await _cursor(pool, "printer") is None


# -- (d) two relay processes on one database ---------------------------------------------------


@pytest.mark.asyncio
async def test_two_dispatchers_never_post_for_one_tenant_at_once(
    database: str, pool: asyncpg.Pool, receiver: Receiver, secret_file: Path
) -> None:
    """Two dispatchers with their own pools (two processes) find the same tenants due and
    claim them at the same instant: per tenant one POST at a time, every event once, in id
    order. (The test holds the cursor table until all four claims wait on it.)"""
    receiver.delay = 0.1
    for _ in range(5):
        await record(pool, _events("acme", 90) + _events("beta", 90))
    expected = {t: await _ids(pool, t) for t in ("acme", "beta")}
    config = _config({"acme": receiver.url, "beta": receiver.url}, secret_file)
    other = await asyncpg.create_pool(database, min_size=1, max_size=4)
    try:
        async with pool.acquire() as gate:
            barrier = gate.transaction()
            await barrier.start()
            await gate.execute("LOCK TABLE webhook_cursors IN SHARE ROW EXCLUSIVE MODE")
            dispatchers = (WebhookDispatcher(pool, config), WebhookDispatcher(other, config))
            async with _running(*dispatchers):
                await _until(
                    lambda: _waiting_claims(other, 4), what="both dispatchers claiming both"
                )
                await barrier.commit()
                for tenant, ids in expected.items():
                    await _until(lambda t=tenant, i=ids: _cursor_at(pool, t, i[-1]), what=tenant)
    finally:
        await other.close()
    assert receiver.refused == []
    for tenant, ids in expected.items():
        assert receiver.most_in_flight[tenant] == 1
        assert receiver.accepted(tenant) == ids


async def _waiting_claims(pool: asyncpg.Pool, count: int) -> bool:
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE relation = 'webhook_cursors'::regclass AND NOT granted"
    )
    return bool(waiting >= count)


@pytest.mark.asyncio
async def test_a_claimed_tenant_cannot_be_claimed_again(pool: asyncpg.Pool) -> None:
    """The claim is one statement: the second caller gets nothing until the lease ends."""
    from relay.queue.sql import QUERIES

    first = await pool.fetchrow(QUERIES["webhook_claim"], "acme", 30.0)
    assert first is not None and first["last_event"] == 0
    assert await pool.fetchrow(QUERIES["webhook_claim"], "acme", 30.0) is None
    await pool.execute(QUERIES["webhook_release"], "acme", first["next_try_at"])
    assert await pool.fetchrow(QUERIES["webhook_claim"], "acme", 30.0) is not None


# -- ids committed out of order ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_event_committed_late_is_not_skipped(
    pool: asyncpg.Pool, receiver: Receiver, secret_file: Path
) -> None:
    """A transaction holds id 1 open while id 2 commits: nothing is posted past the open id,
    and once it commits both arrive, in order."""
    async with pool.acquire() as slow:
        transaction = slow.transaction()
        await transaction.start()
        # Different providers: the two transactions must not wait on one `rates` row.
        await record(slow, _events("acme", 1, provider="slow.example"))
        await record(pool, _events("acme", 1, provider="fast.example"))
        async with _running(WebhookDispatcher(pool, _config({"acme": receiver.url}, secret_file))):
            await asyncio.sleep(2.5)
            assert receiver.requests == []
            await transaction.commit()
            ids = await _ids(pool, "acme")
            await _until(lambda: _cursor_at(pool, "acme", ids[-1]), what="both events")
    assert len(ids) == 2
    assert receiver.accepted("acme") == ids


# -- units -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "draw", "seconds"),
    [(1, 1.0, 1.0), (1, 0.0, 0.5), (2, 1.0, 2.0), (5, 1.0, 16.0), (10, 1.0, 512.0),
     (11, 1.0, 600.0), (500, 1.0, 600.0), (500, 0.0, 300.0)],
)  # fmt: skip
def test_backoff_doubles_from_one_second_to_ten_minutes(
    failures: int, draw: float, seconds: float
) -> None:
    assert backoff(failures, lambda: draw) == seconds


def test_a_short_or_missing_secret_pauses_only_that_tenant(tmp_path: Path) -> None:
    short = tmp_path / "short.secret"
    short.write_bytes(b"tooshort\n")
    good = tmp_path / "good.secret"
    good.write_bytes(b"  " + SECRET + b"\n")
    assert load_webhook_secret(str(good)) == SECRET
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_webhook_secret(str(short))
    config = _config({"acme": "https://hooks.acme.example/relay"}, short, others=("printer",))
    config = config.model_copy(
        update={
            "tenants": [
                *config.tenants,
                *_config({"beta": "https://hooks.beta.example/"}, good).tenants,
                *_config({"gamma": "https://hooks.gamma.example/"}, tmp_path / "none").tenants,
            ]
        }
    )
    assert list(targets_of(config)) == ["beta"]


# -- relay events tail -------------------------------------------------------------------------


def _seed(database: str, events: list[Event]) -> None:
    async def insert() -> None:
        conn = await asyncpg.connect(database)
        try:
            await migrate(conn)
            await record(conn, events)
        finally:
            await conn.close()

    asyncio.run(insert())


@pytest.fixture
def config_file(database: str, tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(RelayConfig(dsn=database, data_dir=tmp_path / "data").render())
    return path


def test_events_tail_prints_the_last_events_oldest_first(database: str, config_file: Path) -> None:
    _seed(database, _events("acme", 25) + _events("printer", 1))
    runner = CliRunner()
    result = runner.invoke(
        main, ["events", "tail", "--config", str(config_file), "--tenant", "acme", "-n", "3",
               "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["recipient"] for e in lines] == [f"r{n}@inbox.example" for n in (22, 23, 24)]
    assert lines[0]["id"] < lines[1]["id"] < lines[2]["id"]
    assert {e["tenant"] for e in lines} == {"acme"}

    result = runner.invoke(main, ["events", "tail", "--config", str(config_file), "-n", "2"])
    assert result.exit_code == 0, result.output
    last_acme, printer = result.stdout.splitlines()
    assert printer.split()[1:6] == [
        "printer", "delivered", "r0@inbox.example", "inbox.example", "spring"
    ]  # fmt: skip
    assert last_acme.split()[1:4] == ["acme", "delivered", "r24@inbox.example"]
    assert '"reply": "250 2.0.0 ok"' in last_acme


@contextlib.contextmanager
def _tail_follow(config_file: Path) -> Iterator[tuple[subprocess.Popen[str], "queue.Queue[str]"]]:
    command = [sys.executable, "-m", "relay", "events", "tail", "--follow", "--json", "-n", "1",
               "--config", str(config_file)]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        reader.join(5)
        assert proc.stderr is not None
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()


def test_events_tail_follow_prints_new_events_until_interrupted(
    database: str, config_file: Path
) -> None:
    _seed(database, _events("acme", 2))
    with _tail_follow(config_file) as (proc, lines):
        assert json.loads(lines.get(timeout=30))["recipient"] == "r1@inbox.example"
        _seed(database, _events("beta", 2))
        new = [json.loads(lines.get(timeout=15)) for _ in range(2)]
        assert [(e["tenant"], e["recipient"]) for e in new] == [
            ("beta", "r0@inbox.example"),
            ("beta", "r1@inbox.example"),
        ]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://127.0.0.1:1/hook", "refused: 127.0.0.1 is not a public address"),
        ("https://169.254.169.254/latest", "refused: 169.254.169.254 is not a public address"),
        ("https://localhost:1/hook", "localhost resolves to no public address"),
    ],
)
async def test_a_webhook_goes_only_to_public_addresses(
    pool: asyncpg.Pool, tmp_path: Path, url: str, expected: str
) -> None:
    """Without `webhook_private`, a webhook at a loopback, link-local or private address is
    never posted to: the failure names why (and the events wait)."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("webhook-secret-of-acme-0123456789")
    config = _config({"acme": url}, secret_file)
    config = config.model_copy(
        update={"tenants": [config.tenants[0].model_copy(update={"webhook_private": False})]}
    )
    dispatcher = WebhookDispatcher(pool, config)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(resolver=PublicResolver())
    ) as session:
        dispatcher._session = session
        error = await dispatcher._post(dispatcher.targets["acme"], b"{}")
    assert error is not None and expected in error


def test_an_http_webhook_needs_webhook_private() -> None:
    with pytest.raises(ValueError, match="webhook_url must be https"):
        TenantSection(
            name="acme", domains=["acme.example"], networks=["192.0.2.0/24"],
            webhook_url="http://hooks.example/x", webhook_secret_file="/x",
        )  # fmt: skip
