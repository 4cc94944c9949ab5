"""Where the queue lives: a configured PostgreSQL server, or an embedded one.

With `[queue] dsn` empty the relay starts its own PostgreSQL through `pgserver` under
`data_dir/pg` (a Unix socket, `fsync` and `synchronous_commit` on), so `relay serve` works on
a fresh machine; with a DSN it uses that server. One code path, one SQL dialect either way.
The embedded server outlives a crash of the relay (it is a separate process) and is reused
by the next start and by admin commands; a clean shutdown of the last user stops it.
"""

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import asyncpg

from relay.config.schema import Config
from relay.queue.migrate import migrate

log = logging.getLogger(__name__)
EMBEDDED_DATABASE = "relay"

Pool = asyncpg.Pool
"""A pool as the rest of the relay holds it: a handle to give the queue's stores."""


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pg"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return the DSN of the relay's database."""
        run_dir = self.pgdata.parent / "run"
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # platformdirs warns (RuntimeDirWarning) without XDG_RUNTIME_DIR, and pgserver keeps
        # its lock file there: give it a private one.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(run_dir))
        import pgserver  # imported late: it reads XDG_RUNTIME_DIR at import time

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        admin_uri: str = self._server.get_uri("postgres")
        exists = self._server.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';"
        )
        if "1 row" not in exists:
            self._server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
        return admin_uri.replace("/postgres?", f"/{EMBEDDED_DATABASE}?", 1)

    def stop(self) -> None:
        """Let go of the server; pgserver stops it when this was its last user."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a pool connection needs on release beyond asyncpg's own rollback of an open
    transaction: nothing. asyncpg's default reset (`SELECT pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`) is a round trip on every release, one per query made through
    the pool; pool users here set no session state, take no advisory locks and do not LISTEN
    (the migration lock and the queue's LISTEN have connections of their own)."""


async def _pool(dsn: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        command_timeout=60,
        max_inactive_connection_lifetime=60,
        # A 250 promises the message survives a crash: never trust a server default.
        server_settings={"synchronous_commit": "on"},
        reset=_keep_session,
    )


async def _close(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except TimeoutError:
        pool.terminate()


class Database:
    """The connection pool, plus the embedded server when there is one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        submission_pool: asyncpg.Pool,
        dsn: str,
        embedded: EmbeddedPostgres | None,
    ) -> None:
        self.pool = pool
        """Delivery, feedback, side tasks and HTTP."""
        self.submission_pool = submission_pool
        """SMTP sessions' lookups and the group commit, apart from the rest: measured under
        load, a client's wait for its 250 was mostly a wait for one of the pool's
        connections while delivery workers held them."""
        self.dsn = dsn
        self._embedded = embedded

    @classmethod
    async def open(cls, config: Config, *, run_migrations: bool = True) -> "Database":
        embedded = None
        dsn = config.queue.dsn
        if not dsn:
            embedded = EmbeddedPostgres(Path(config.relay.data_dir))
            dsn = await asyncio.to_thread(embedded.start)
        try:
            if run_migrations:
                conn = await asyncpg.connect(dsn)
                try:
                    await migrate(conn)
                finally:
                    await conn.close()
            pool = await _pool(dsn, config.queue.pool_size)
            try:
                submission_pool = await _pool(dsn, config.queue.pool_size)
            except BaseException:
                pool.terminate()
                raise
        except BaseException:
            if embedded:
                embedded.stop()
            raise
        return cls(pool, submission_pool, dsn, embedded)

    async def close(self) -> None:
        """Close both pools at once, each given 10 s before its connections are cut, so a
        stop stays within the service manager's timeout (deploy/systemd: 45 s)."""
        await asyncio.gather(_close(self.submission_pool), _close(self.pool))
        if self._embedded:
            await asyncio.to_thread(self._embedded.stop)
