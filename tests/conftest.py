"""Fixtures: a real PostgreSQL per session, a fresh database per test, sinks and relays."""

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
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"relay_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield _with_database(pg_admin_dsn, name)
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


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
    """A connection pool to the test's database, with the relay's schema migrated."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn)
    try:
        yield pool
    finally:
        await pool.close()
