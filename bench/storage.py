"""What storing a message body costs PostgreSQL, by how the column compresses it.

    python -m bench.storage [--size 102400] [--rows 300] [--repeat 3] [--dsn DSN]

A `bytea` value larger than about 2 KB is compressed by PostgreSQL before it is written,
with pglz unless the column says otherwise, and the compressing is done by the backend
that runs the INSERT: for the queue, inside the transaction whose commit precedes the
`250`. For each column setting (pglz, the default; lz4, where the server was built with
it; none, `STORAGE EXTERNAL`) and each kind of body (smtp-source's lines of X, as the
side-by-side bench sends; a text newsletter; base64 of random bytes, as an attachment
is), this inserts `--rows` bodies of `--size` bytes one transaction each, then forces a
checkpoint, reads each body back by its key (as delivery does), and reports the CPU per
insert and per read of the backend and of the server's own processes (from /proc, so the
server must run on this machine) and the table's size per row. The embedded PostgreSQL
by default, or the server at `--dsn`. Results go to bench/results/storage-latest.json and
a dated copy.
"""

import argparse
import asyncio
import base64
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from bench import dkim_sign, load, procs
from bench.results import write_results
from relay.queue.database import EmbeddedPostgres

SETTINGS = {
    "pglz": "SET COMPRESSION pglz",
    "lz4": "SET COMPRESSION lz4",
    "none": "SET STORAGE EXTERNAL",
}


def bodies(size: int) -> dict[str, bytes]:
    rng = random.Random(size)
    attachment = base64.encodebytes(rng.randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    return {
        "x_lines": load.message("<storage@bench.example>", size),
        "newsletter": dkim_sign.message(size),
        "base64": attachment[:size],
    }


async def _server_pids(conn: asyncpg.Connection) -> list[int]:
    """This connection's backend and the server's own processes (WAL writer, checkpointer,
    background writer, autovacuum): the compression is the backend's, the writing of what it
    produced is shared with them."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE pid = pg_backend_pid() OR backend_type <> 'client backend'"
    )
    return [r["pid"] for r in rows]


async def _measure(conn: asyncpg.Connection, setting: str, body: bytes, rows: int) -> Any:
    await conn.execute("DROP TABLE IF EXISTS bench_storage")
    await conn.execute("CREATE TABLE bench_storage (id serial PRIMARY KEY, content bytea)")
    try:
        await conn.execute(f"ALTER TABLE bench_storage ALTER COLUMN content {SETTINGS[setting]}")
    except asyncpg.FeatureNotSupportedError:
        return None  # lz4 on a server built without it
    insert = "INSERT INTO bench_storage (content) VALUES ($1)"
    for _ in range(10):  # warm-up: the prepared statement, the first pages
        await conn.execute(insert, body)
    await conn.execute("TRUNCATE bench_storage")
    await conn.execute("CHECKPOINT")
    server = await _server_pids(conn)
    before = procs.cpu_seconds(server)
    for _ in range(rows):
        await conn.execute(insert, body)
    await conn.execute("CHECKPOINT")  # the pages written, as they would be sooner or later
    cpu = procs.cpu_seconds(server) - before
    size = await conn.fetchval("SELECT pg_total_relation_size('bench_storage')")
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM bench_storage")]
    read = "SELECT content FROM bench_storage WHERE id = $1"
    before = procs.cpu_seconds(server)
    for row in ids:  # as delivery reads a body back, one at a time
        await conn.fetchval(read, row)
    read_cpu = procs.cpu_seconds(server) - before
    await conn.execute("DROP TABLE bench_storage")
    return {
        "cpu_ms_per_insert": cpu / rows * 1000,
        "cpu_ms_per_read": read_cpu / len(ids) * 1000,
        "bytes_per_row": size / rows,
    }


async def _run(dsn: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        runs = []
        for _ in range(args.repeat):
            run: dict[str, Any] = {}
            for kind, body in bodies(args.size).items():
                for setting in SETTINGS:
                    run[f"{kind}/{setting}"] = await _measure(conn, setting, body, args.rows)
            runs.append(run)
        return runs
    finally:
        await conn.close()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for cell in runs[0]:
        measured = [run[cell] for run in runs if run[cell] is not None]
        if not measured:
            cells[cell] = None
            continue
        cpu = [m["cpu_ms_per_insert"] for m in measured]
        reads = [m.get("cpu_ms_per_read", 0.0) for m in measured]
        cells[cell] = {
            "cpu_ms_per_insert": statistics.median(cpu),
            "cpu_ms_spread": [min(cpu), max(cpu)],
            "cpu_ms_per_read": statistics.median(reads),
            "bytes_per_row": statistics.median(m["bytes_per_row"] for m in measured),
        }
    return cells


def report(cells: dict[str, Any], size: int) -> str:
    lines = [
        f"PostgreSQL CPU per INSERT of a {size}-byte body (medians, spread), per read of it "
        "back, table bytes/row"
    ]
    for cell, figures in cells.items():
        if figures is None:
            lines.append(f"  {cell:22} not supported by this server")
            continue
        low, high = figures["cpu_ms_spread"]
        lines.append(
            f"  {cell:22} {figures['cpu_ms_per_insert']:6.3f} ms ({low:.3f}-{high:.3f})"
            f"  {figures['cpu_ms_per_read']:6.3f} ms  {figures['bytes_per_row']:9.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.storage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=102_400, help="body bytes (102400)")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default="", help="a server on this machine (embedded if empty)")
    args = parser.parse_args()
    if args.dsn:
        runs = asyncio.run(_run(args.dsn, args))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
            database = EmbeddedPostgres(Path(tmp))
            try:
                runs = asyncio.run(_run(database.start(), args))
            finally:
                database.stop()
    cells = summarise(runs)
    print(report(cells, args.size))
    plan = {"size": args.size, "rows": args.rows, "repeat": args.repeat, "dsn": bool(args.dsn)}
    path = write_results("storage", {"plan": plan, "runs": runs, "cells": cells})
    print(f"results in {path} (and storage-latest.json)")


if __name__ == "__main__":
    main()
