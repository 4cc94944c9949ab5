"""`relay consent import|show`: the consent records behind P-CONSENT-RECORD.

A CSV import has the columns `address, consented_at, source, form_version, consent_text,
method` (a header row naming them is expected; `consented_at` in ISO 8601, a time without
a zone is taken as UTC; `method` one of web-form, double-opt-in, paper, verbal). Rows that
cannot be proof are refused with their line number and reason; the rest are stored in
batches, with a progress bar. `show` prints everything held for one address, for an admin,
a supervisory authority or the data subject.
"""

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import asyncpg
import click

from relay.cli.common import config_option, jsonable, load, run, with_db
from relay.queue.sql import QUERIES
from relay.smtp.address import AddressError, parse_path

COLUMNS = ("address", "consented_at", "source", "form_version", "consent_text", "method")
METHODS = ("web-form", "double-opt-in", "paper", "verbal")
_BATCH = 1000

Record = tuple[str, datetime, str, str, str, str]


def parse_row(row: dict[str, str]) -> Record:
    """One CSV row as a record, or ValueError saying why it is no proof of consent."""
    missing = [c for c in COLUMNS if not (row.get(c) or "").strip()]
    if missing:
        raise ValueError(f"empty {', '.join(missing)}")
    try:
        address = parse_path(f"TO:<{row['address'].strip()}>", "TO:").address
    except AddressError as exc:
        raise ValueError(f"bad address {row['address']!r}: {exc}") from exc
    try:
        when = datetime.fromisoformat(row["consented_at"].strip())
    except ValueError as exc:
        raise ValueError(f"consented_at {row['consented_at']!r} is not ISO 8601") from exc
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when > datetime.now(UTC):
        raise ValueError(f"consented_at {row['consented_at']!r} is in the future")
    method = row["method"].strip().lower()
    if method not in METHODS:
        raise ValueError(f"method {row['method']!r} is not one of {', '.join(METHODS)}")
    return (address, when, row["source"].strip(), row["form_version"].strip(),
            row["consent_text"].strip(), method)  # fmt: skip


@click.group()
def consent() -> None:
    """P-CONSENT-RECORD: import and show consent records."""


@consent.command("import")
@config_option
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@click.option("--tenant", required=True)
def consent_import(config_path: Path, csv_file: TextIO, tenant: str) -> None:
    """Import consent records from a CSV file (see `relay consent --help`)."""
    config = load(config_path)
    reader = csv.DictReader(csv_file)
    if not reader.fieldnames or set(COLUMNS) - set(reader.fieldnames):
        raise click.ClickException(f"the header row must name {', '.join(COLUMNS)}")
    rows = list(reader)
    records: list[Record] = []
    refused: list[str] = []
    for number, row in enumerate(rows, start=2):
        try:
            records.append(parse_row(row))
        except ValueError as exc:
            refused.append(f"line {number}: {exc}")

    async def store(pool: asyncpg.Pool) -> None:
        with click.progressbar(length=len(records), label="storing", file=None) as bar:
            for start in range(0, len(records), _BATCH):
                batch = records[start : start + _BATCH]
                columns = [list(c) for c in zip(*batch, strict=True)]
                await pool.execute(QUERIES["consent_upsert"], tenant, *columns)
                bar.update(len(batch))

    if records:
        run(with_db(config, store))
    click.echo(f"stored {len(records)} consent records for {tenant}, refused {len(refused)}")
    for line in refused:
        click.echo(f"refused {line}", err=True)


@consent.command("show")
@config_option
@click.argument("address")
@click.option("--tenant", required=True)
@click.option("--json", "as_json", is_flag=True)
def consent_show(config_path: Path, address: str, tenant: str, as_json: bool) -> None:
    """Show the consent record of ADDRESS for TENANT."""
    config = load(config_path)
    query = QUERIES["consent_show"]
    row = run(with_db(config, lambda pool: pool.fetchrow(query, tenant, address)))
    if row is None:
        raise click.ClickException(f"no consent record of {address} for {tenant}")
    record = dict(row)
    if as_json:
        click.echo(json.dumps(jsonable(record), indent=2))
        return
    for key, value in record.items():
        click.echo(f"{key:13} {value}")
