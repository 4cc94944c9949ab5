"""relay/queue/sql/schema.sql against the migrations: the same schema, read from the catalog.

schema.sql is the schema written out in one place for readers; the numbered migrations are
what builds it. A file kept by hand drifts, so these tests build one database from each and
compare what PostgreSQL's catalog says about them, not the text: a different spelling of the
same thing (`timestamptz` for `timestamp with time zone`, `bigserial` for a sequence, a
default and an OWNED BY) is no difference, a different type, default, nullability,
constraint, index, function body or trigger is.

`schema_migrations` is left out of the comparison because schema.sql leaves it out: it is
migrate.py's record of what it applied, created by migrate.py and by no migration, and
describes no part of the relay's data.
"""

import difflib
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from importlib import resources

import asyncpg
import pytest
import pytest_asyncio

from relay.queue.migrate import migrate
from relay.queue.sql import migrations

pytestmark = pytest.mark.queue

SCHEMA_FILE = resources.files("relay.queue").joinpath("sql").joinpath("schema.sql")
NOT_IN_SCHEMA_FILE = ["schema_migrations"]

# Each query yields (key, text) rows for the objects of `public` outside $1; a row becomes
# the line "key: text", and a text of several lines (a function) one line per line.
CATALOG: dict[str, str] = {
    # Kind, unlogged or temporary, row security, storage parameters.
    "relation": """
        SELECT c.relname,
               concat_ws(' ',
                         CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                                        WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                                        WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table'
                                        ELSE 'composite type' END,
                         CASE c.relpersistence WHEN 'u' THEN 'UNLOGGED'
                                               WHEN 't' THEN 'TEMPORARY' END,
                         CASE WHEN c.relrowsecurity THEN 'ROW LEVEL SECURITY' END,
                         'WITH ' || c.reloptions::text)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
          AND c.relname <> ALL ($1::text[])
        ORDER BY 1
    """,
    # Position among the live columns (order matters to SELECT * and to INSERT without a
    # column list), type, nullability, default, identity, generation, collation, storage and
    # compression (0012 chooses those for messages.content; the letters are pg_attribute's:
    # p plain, x extended, e external, m main; l lz4, p pglz).
    "column": """
        SELECT c.relname || ' #' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)
                   || ' ' || a.attname,
               concat_ws(' ', format_type(a.atttypid, a.atttypmod),
                         CASE WHEN a.attnotnull THEN 'NOT NULL' ELSE 'NULL' END,
                         'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid),
                         'IDENTITY ' || nullif(a.attidentity::text, ''),
                         'GENERATED ' || nullif(a.attgenerated::text, ''),
                         'COLLATE ' || CASE WHEN a.attcollation <> t.typcollation
                                            THEN a.attcollation::regcollation::text END,
                         'STORAGE ' || a.attstorage::text,
                         'COMPRESSION ' || nullif(a.attcompression::text, ''))
        FROM pg_attribute AS a
             JOIN pg_class AS c ON c.oid = a.attrelid
             JOIN pg_namespace AS n ON n.oid = c.relnamespace
             JOIN pg_type AS t ON t.oid = a.atttypid
             LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND c.relname <> ALL ($1::text[]) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
    """,
    # Table and domain constraints, by name: migrations drop and re-add them by name.
    "constraint": """
        SELECT coalesce(c.relname, t.typname) || '.' || con.conname,
               pg_get_constraintdef(con.oid)
        FROM pg_constraint AS con
             JOIN pg_namespace AS n ON n.oid = con.connamespace
             LEFT JOIN pg_class AS c ON c.oid = con.conrelid
             LEFT JOIN pg_type AS t ON t.oid = con.contypid
        WHERE n.nspname = 'public' AND coalesce(c.relname, t.typname) <> ALL ($1::text[])
        ORDER BY 1
    """,
    "index": """
        SELECT i.relname, pg_get_indexdef(i.oid)
        FROM pg_index AS x
             JOIN pg_class AS i ON i.oid = x.indexrelid
             JOIN pg_class AS c ON c.oid = x.indrelid
             JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname <> ALL ($1::text[])
        ORDER BY 1
    """,
    # Type, bounds, step, cache, cycling, where it stands, and the column that owns it (as
    # `bigserial` makes it).
    "sequence": """
        SELECT s.relname,
               concat_ws(' ', format_type(q.seqtypid, NULL), 'START ' || q.seqstart,
                         'INCREMENT ' || q.seqincrement, 'MIN ' || q.seqmin,
                         'MAX ' || q.seqmax, 'CACHE ' || q.seqcache,
                         CASE WHEN q.seqcycle THEN 'CYCLE' END,
                         'LAST ' || coalesce(v.last_value::text, 'none'),
                         'OWNED BY ' || (
                             SELECT t.relname || '.' || a.attname
                             FROM pg_depend AS dep
                                  JOIN pg_class AS t ON t.oid = dep.refobjid
                                  JOIN pg_attribute AS a
                                       ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
                             WHERE dep.classid = 'pg_class'::regclass AND dep.objid = s.oid
                               AND dep.refclassid = 'pg_class'::regclass
                               AND dep.deptype IN ('a', 'i')))
        FROM pg_sequence AS q
             JOIN pg_class AS s ON s.oid = q.seqrelid
             JOIN pg_namespace AS n ON n.oid = s.relnamespace
             JOIN pg_sequences AS v ON v.schemaname = n.nspname AND v.sequencename = s.relname
        WHERE n.nspname = 'public' AND s.relname <> ALL ($1::text[])
        ORDER BY 1
    """,
    # The whole definition: language, volatility, settings and the body as written.
    "function": """
        SELECT p.oid::regprocedure::text,
               CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname <> ALL ($1::text[])
        ORDER BY 1
    """,
    # Triggers written in SQL (not those PostgreSQL makes for foreign keys), and whether
    # they are enabled.
    "trigger": """
        SELECT c.relname || '.' || t.tgname,
               concat_ws(' ', pg_get_triggerdef(t.oid),
                         CASE t.tgenabled WHEN 'O' THEN NULL WHEN 'D' THEN 'DISABLED'
                                          ELSE 'ENABLED ' || t.tgenabled::text END)
        FROM pg_trigger AS t
             JOIN pg_class AS c ON c.oid = t.tgrelid
             JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal AND c.relname <> ALL ($1::text[])
        ORDER BY 1
    """,
    "view": """
        SELECT c.relname, pg_get_viewdef(c.oid)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') AND c.relname <> ALL ($1::text[])
        ORDER BY 1
    """,
    # Enums, domains and ranges made by CREATE TYPE or CREATE DOMAIN (not a table's row type
    # or an array type, which come with what they belong to).
    "type": """
        SELECT t.typname,
               concat_ws(' ', t.typtype,
                         'BASE ' || nullif(format_type(t.typbasetype, t.typtypmod), '-'),
                         CASE WHEN t.typnotnull THEN 'NOT NULL' END,
                         'DEFAULT ' || t.typdefault,
                         'LABELS ' || (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                                       FROM pg_enum AS e WHERE e.enumtypid = t.oid))
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm')
          AND t.typname <> ALL ($1::text[])
        ORDER BY 1
    """,
    "extension": """
        SELECT e.extname, e.extversion || ' in ' || n.nspname
        FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
        WHERE e.extname <> ALL ($1::text[])
        ORDER BY 1
    """,
    # COMMENT ON a table or a column.
    "comment": """
        SELECT c.relname || coalesce('.' || a.attname, ''), d.description
        FROM pg_description AS d
             JOIN pg_class AS c ON d.classoid = 'pg_class'::regclass AND c.oid = d.objoid
             JOIN pg_namespace AS n ON n.oid = c.relnamespace
             LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = d.objsubid
        WHERE n.nspname = 'public' AND c.relname <> ALL ($1::text[])
        ORDER BY 1
    """,
}


async def describe(conn: asyncpg.Connection) -> list[str]:
    """The schema of `public` as lines of text, in a fixed order, to compare and to diff.

    Besides the catalog, the rows of every table: a migration may seed one (0008's single
    `reputation_rounds` row), and the relay relies on it as on a table."""
    lines: list[str] = []
    for kind, query in CATALOG.items():
        for key, text in await conn.fetch(query, NOT_IN_SCHEMA_FILE):
            lines.extend(f"{kind} {key}: {line}".rstrip() for line in text.splitlines() or [""])
    tables = await conn.fetch(
        "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        " AND c.relname <> ALL ($1::text[]) ORDER BY 1",
        NOT_IN_SCHEMA_FILE,
    )
    for (table,) in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        rows = await conn.fetch(f"SELECT to_jsonb(t)::text FROM public.{quoted} AS t ORDER BY 1")
        lines.extend(f"row {table}: {row}" for (row,) in rows)
    return lines


def _with_database(dsn: str, name: str) -> str:
    """The server's DSN with another database in it (the admin DSN names `postgres`)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@pytest_asyncio.fixture
async def two_databases(pg_admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """Two fresh, empty databases on the test server (DSNs), dropped afterwards.

    Databases rather than two schemas of one: schema.sql creates its objects in `public`, as
    the migrations do, and the catalog's definitions then read the same in both."""
    names = [f"relay_schema_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        for name in names:
            await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield _with_database(pg_admin_dsn, names[0]), _with_database(pg_admin_dsn, names[1])
        finally:
            for name in names:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_schema_file_matches_the_migrations(two_databases: tuple[str, str]) -> None:
    """A database made by the migrations and one made by schema.sql describe the same; a
    difference is shown as a diff from the migrations' side to the file's."""
    migrated_dsn, loaded_dsn = two_databases
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await migrate(conn)
        from_migrations = await describe(conn)
    finally:
        await conn.close()
    conn = await asyncpg.connect(loaded_dsn)
    try:
        await conn.execute(SCHEMA_FILE.read_text("utf-8"))
        from_file = await describe(conn)
    finally:
        await conn.close()

    assert from_migrations, "the migrated database describes nothing"
    diff = list(
        difflib.unified_diff(
            from_migrations, from_file, "the migrations", "schema.sql", n=1, lineterm=""
        )
    )
    if diff:
        pytest.fail(
            "relay/queue/sql/schema.sql does not describe the schema the migrations build"
            " (- the migrations, + schema.sql):\n" + "\n".join(diff),
            pytrace=False,
        )


def test_schema_file_names_the_last_migration() -> None:
    """The header says which migration the file is the state after; a new migration must
    move it, as a reminder that the file has to follow."""
    text = SCHEMA_FILE.read_text("utf-8")
    match = re.search(r"after migration (\d{4})\s+-- \((\w+\.sql)\)", text)
    assert match is not None, "schema.sql's header does not say after which migration it is"
    version, name, _ = migrations()[-1]
    assert (int(match.group(1)), match.group(2)) == (version, name)


def test_schema_file_is_neither_a_migration_nor_queries() -> None:
    """The migration runner and the query loader both pick files of the folder by name;
    schema.sql must be neither a migration (it would be applied to a migrated database) nor
    hold named queries."""
    assert "schema.sql" not in {name for _, name, _ in migrations()}
    assert "-- name:" not in SCHEMA_FILE.read_text("utf-8")
