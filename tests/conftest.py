"""Fixtures: a real PostgreSQL per session, a fresh database per test, sinks and relays.

Each test's database is a copy of one migrated once per session (`CREATE DATABASE ...
TEMPLATE`): copying the finished schema costs a fraction of running every migration again
for every test, and the relays and pools that migrate at start find nothing to do. Tests of
migrating itself take `empty_database`.
"""

import asyncio
import os
import shutil
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from relay.queue.migrate import migrate
from tests.support.peers import RelayConfig, RelayProcess, Sink


def _with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the whole run: RELAY_TEST_DSN's, or an embedded one."""
    configured = os.environ.get("RELAY_TEST_DSN")
    if configured:
        yield configured
        return
    # Outside pytest's own temp folders: pytest prunes old runs' folders, and a run started
    # meanwhile must not delete the data directory of a server still in use.
    base = Path(tempfile.mkdtemp(prefix="relay-test-pg-"))
    (base / "run").mkdir(mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base / "run"))
    import pgserver

    server = pgserver.get_server(base / "data", cleanup_mode="stop")
    # A server that lives for one run needs no flush to disk: its data survives every crash a
    # test makes (the relay's kill -9, the server's own restart), since the kernel keeps what
    # was written, and only a crash of the machine would lose it. The relay still commits
    # with synchronous_commit on, so each 250 still waits for its WAL write.
    server.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET full_page_writes = off;")
    server.psql("SELECT pg_reload_conf();")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _admin(dsn: str, sql: str) -> None:
    """Run one statement on the server (CREATE and DROP DATABASE cannot run in a transaction,
    so each gets a connection of its own)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _migrate(dsn: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def migrated_template(pg_admin_dsn: str) -> Iterator[str]:
    """The name of a database with the relay's migrations applied, made once per session
    (when the first test asks for `database`) and dropped at its end. A random name, so runs
    sharing one server (RELAY_TEST_DSN) never copy each other's template."""
    name = f"relay_template_{uuid.uuid4().hex[:12]}"
    _admin(pg_admin_dsn, f"CREATE DATABASE {name}")
    try:
        _migrate(_with_database(pg_admin_dsn, name))
        # CREATE DATABASE ... TEMPLATE refuses a template anyone is connected to: with
        # connections to it refused from now on, a stray one cannot fail the tests after it.
        _admin(pg_admin_dsn, f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        yield name
    finally:
        _admin(pg_admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _scratch_database(pg_admin_dsn: str, template: str | None) -> Iterator[str]:
    """A new database (a copy of `template`, or empty) for one test; dropped afterwards."""
    name = f"relay_test_{uuid.uuid4().hex[:12]}"
    copy = f" TEMPLATE {template}" if template else ""
    _admin(pg_admin_dsn, f"CREATE DATABASE {name}{copy}")
    try:
        yield _with_database(pg_admin_dsn, name)
    finally:
        _admin(pg_admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database(pg_admin_dsn: str, migrated_template: str) -> Iterator[str]:
    """A database of one test's own with the relay's schema already migrated; dropped
    afterwards."""
    yield from _scratch_database(pg_admin_dsn, migrated_template)


@pytest.fixture
def empty_database(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh database without the relay's schema, for tests of the migrations themselves;
    dropped afterwards."""
    yield from _scratch_database(pg_admin_dsn, None)


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def relay_config(database: str, tmp_path: Path, sink: Sink) -> RelayConfig:
    """Config for a relay that routes the test domains to the sink."""
    return RelayConfig(
        dsn=database,
        data_dir=tmp_path / "data",
        routes={"inbox.example": sink.port, "acme.example": sink.port},
    )


@pytest.fixture
def relay(relay_config: RelayConfig, tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(relay_config, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest_asyncio.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool to the test's database, with the relay's schema migrated (already
    there in the copy of the template; migrating again checks that and applies nothing)."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn)
    try:
        yield pool
    finally:
        await pool.close()
